// ckpt-h5-check: the helper process in which the ckpt-h5 reader lets HDF5 parse an untrusted file
// first (HDF5 1.10 can crash on malformed metadata). Started by the library, not by people: it
// serves check requests on stdin and answers on stdout until stdin closes; it crashes where
// HDF5 would, and then the library reports the file as corrupt.
#include "ckpt_h5/check.h"

int main() {
  ckpt::detail::ckpt_h5::serve_checks();
  return 0;
}
