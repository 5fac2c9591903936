#include <catch2/catch.hpp>

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>
#include <sstream>

#include "ckpt/boost_serialization.h"
#include "helpers.h"

using namespace ckpt;

namespace {

// A user's own training state with the model inside it.
struct TrainingState {
  int epoch = 0;
  StateDict model;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::make_nvp("epoch", epoch);
    ar& boost::serialization::make_nvp("model", model);
  }
};

template <class Out, class In>
TrainingState round_trip(const TrainingState& state) {
  std::stringstream stream;
  {
    Out out(stream);
    out << boost::serialization::make_nvp("state", state);
  }
  TrainingState back;
  In in(stream);
  in >> boost::serialization::make_nvp("state", back);
  return back;
}

}  // namespace

TEMPLATE_TEST_CASE("StateDict inside a user's Boost archive", "[boost]",
                   (std::pair<boost::archive::text_oarchive, boost::archive::text_iarchive>),
                   (std::pair<boost::archive::xml_oarchive, boost::archive::xml_iarchive>),
                   (std::pair<boost::archive::binary_oarchive, boost::archive::binary_iarchive>)) {
  TrainingState state;
  state.epoch = 7;
  state.model = test::kitchen_sink();
  const TrainingState back = round_trip<typename TestType::first_type, typename TestType::second_type>(state);
  CHECK(back.epoch == 7);
  test::require_same(state.model, back.model);
}

TEST_CASE("Boost archives from a newer Tensor version are refused", "[boost]") {
  std::stringstream stream;
  {
    boost::archive::text_oarchive out(stream);
    out << Tensor::zeros(DType::float32, {1});
  }
  std::string text = stream.str();
  // The class version follows the archive header and the tracking/version fields: " 0 0 1 ".
  const auto at = text.find(" 0 1 ", 20);
  REQUIRE(at != std::string::npos);
  text.replace(at, 5, " 0 9 ");
  std::stringstream changed(text);
  boost::archive::text_iarchive in(changed);
  Tensor t;
  CHECK_THROWS_WITH(in >> t, "Boost archive: Tensor version 9 is newer than this reader (1)");
}
