// The tensor helper's self-check, run by the build (`make clients-cpp`): exact bytes on the wire.
#include <cstdio>
#include <string>
#include <vector>

#include "tensors.h"

namespace {

int failures = 0;

std::string Hex(const std::string& bytes) {
  std::string out;
  char buffer[4];
  for (unsigned char c : bytes) {
    std::snprintf(buffer, sizeof buffer, out.empty() ? "%02x" : " %02x", c);
    out += buffer;
  }
  return out;
}

void ExpectBytes(const char* what, const std::string& got, const std::string& want) {
  if (got != want) {
    std::fprintf(stderr, "FAIL %s: got [%s], want [%s]\n", what, Hex(got).c_str(), Hex(want).c_str());
    ++failures;
  }
}

template <typename F>
void ExpectThrows(const char* what, F f) {
  try {
    f();
  } catch (const std::invalid_argument&) {
    return;
  }
  std::fprintf(stderr, "FAIL %s: no std::invalid_argument\n", what);
  ++failures;
}

}  // namespace

int main() {
  using inferd::DecodeBytes;
  using std::string;
  // FP32 1.0f is 0x3f800000: least significant byte first
  ExpectBytes("FP32 1.0f", inferd::EncodeLittleEndian(std::vector<float>{1.0f}), string("\x00\x00\x80\x3f", 4));
  ExpectBytes("FP32 [1, -2]", inferd::RawFp32("x", {2}, {1.0f, -2.0f}).raw_contents(),
              string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
  // the big-endian path: each element's bytes reversed
  string swapped("\x00\x00\x80\x3f\x01\x02\x03\x04", 8);
  inferd::ReverseEachElement(&swapped, 4);
  ExpectBytes("reverse 4-byte elements", swapped, string("\x3f\x80\x00\x00\x04\x03\x02\x01", 8));
  ExpectBytes("INT64 258", inferd::EncodeLittleEndian(std::vector<int64_t>{258}), string("\x02\x01\0\0\0\0\0\0", 8));
  // docs/protocol.md: "hi", "abc" as BYTES [2]
  const string hi_abc("\x02\x00\x00\x00hi\x03\x00\x00\x00" "abc", 13);
  ExpectBytes("BYTES hi abc", inferd::EncodeBytes({"hi", "abc"}), hi_abc);
  ExpectBytes("BYTES 300-byte element prefix", inferd::EncodeBytes({string(300, 'x')}).substr(0, 4),
              string("\x2c\x01\x00\x00", 4));
  ExpectBytes("BYTES empty element", inferd::EncodeBytes({""}), string("\0\0\0\0", 4));
  const std::vector<string> decoded = DecodeBytes(hi_abc, 2);
  if (decoded != std::vector<string>{"hi", "abc"}) {
    std::fprintf(stderr, "FAIL BYTES round trip\n");
    ++failures;
  }
  ExpectThrows("BYTES length past the end", [&] { DecodeBytes(hi_abc.substr(0, 12), 2); });
  ExpectThrows("BYTES left over", [&] { DecodeBytes(hi_abc + "z", 2); });
  ExpectThrows("BYTES missing element", [&] { DecodeBytes(hi_abc, 3); });
  ExpectThrows("count mismatch", [] { inferd::RawFp32("x", {2, 2}, {1.0f}); });
  ExpectThrows("FP32 from INT64", [] { inferd::Fp32Values(inferd::RawInt64("x", {1}, {1})); });
  // values read back from raw and from typed fields
  const std::vector<float> values{0.5f, -3.25f, 1e-7f};
  if (inferd::Fp32Values(inferd::RawFp32("x", {3}, values)) != values ||
      inferd::Fp32Values(inferd::TypedFp32("x", {1, 3}, values)) != values ||
      inferd::BytesValues(inferd::RawBytes("s", {2}, {"hi", "abc"})) != std::vector<string>{"hi", "abc"} ||
      inferd::BytesValues(inferd::TypedBytes("s", {2}, {"hi", "abc"})) != std::vector<string>{"hi", "abc"} ||
      inferd::Int64Values(inferd::TypedInt64("i", {2}, {-1, 1LL << 40})) != std::vector<int64_t>{-1, 1LL << 40}) {
    std::fprintf(stderr, "FAIL values round trip\n");
    ++failures;
  }
  if (failures != 0) return 1;
  std::printf("tensor helper self-check ok (%s-endian host)\n", inferd::HostIsLittleEndian() ? "little" : "big");
  return 0;
}
