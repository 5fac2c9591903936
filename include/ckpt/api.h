// What libckpt exports: everything the public headers declare between CKPT_API_BEGIN and
// CKPT_API_END. The library is built with hidden visibility, so nothing of src/ (the detail::
// internals of the formats) is part of its ABI.
#pragma once

#if defined(__GNUC__)
#define CKPT_API_BEGIN _Pragma("GCC visibility push(default)")
#define CKPT_API_END _Pragma("GCC visibility pop")
#else
#define CKPT_API_BEGIN
#define CKPT_API_END
#endif
