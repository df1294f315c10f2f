// Raw and typed inferd.v1 tensors from C++ (docs/protocol.md, "Tensors").
//
// raw_contents is little-endian and row-major whatever the host: values are copied with memcpy and their
// bytes reversed on a big-endian host, never reinterpreted in place. BYTES elements are each a 4-byte
// little-endian length followed by the bytes. The typed fields (fp32_contents, int64_contents,
// bytes_contents, ...) need no byte order at all: protobuf encodes them.
#ifndef INFERD_CLIENTS_CPP_TENSORS_H_
#define INFERD_CLIENTS_CPP_TENSORS_H_

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "inferd/v1/tensor.pb.h"

namespace inferd {

// True when this host stores integers least significant byte first (checked at run time, once).
bool HostIsLittleEndian();

// Reverses the bytes of each `width`-byte element in place (what a big-endian host does to raw_contents).
void ReverseEachElement(std::string* bytes, size_t width);

// The number of elements a shape holds (1 for []); throws std::invalid_argument on a negative dimension.
int64_t ElementCount(const std::vector<int64_t>& shape);

// Little-endian bytes of fixed-width values (float, double, int8..int64, uint8..uint64).
template <typename T>
std::string EncodeLittleEndian(const std::vector<T>& values) {
  static_assert(std::is_arithmetic<T>::value && !std::is_same<T, bool>::value, "a fixed-width number type");
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(&out[0], values.data(), out.size());
  if (!HostIsLittleEndian()) ReverseEachElement(&out, sizeof(T));
  return out;
}

// The values in little-endian bytes; throws std::invalid_argument unless the size is a multiple of sizeof(T).
template <typename T>
std::vector<T> DecodeLittleEndian(const std::string& raw) {
  static_assert(std::is_arithmetic<T>::value && !std::is_same<T, bool>::value, "a fixed-width number type");
  if (raw.size() % sizeof(T) != 0) {
    throw std::invalid_argument("raw_contents of " + std::to_string(raw.size()) + " bytes is not a whole number of " +
                                std::to_string(sizeof(T)) + "-byte elements");
  }
  std::string bytes = raw;
  if (!HostIsLittleEndian()) ReverseEachElement(&bytes, sizeof(T));
  std::vector<T> out(bytes.size() / sizeof(T));
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return out;
}

// BYTES in raw form: for each element a 4-byte little-endian length, then its bytes.
std::string EncodeBytes(const std::vector<std::string>& elements);
// Splits raw BYTES into exactly `count` elements; throws std::invalid_argument on a short buffer, a length
// running past the end or bytes left over.
std::vector<std::string> DecodeBytes(const std::string& raw, int64_t count);

// Raw tensors (the fast path). The shape's element count must match the values (std::invalid_argument).
v1::Tensor RawFp32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& values);
v1::Tensor RawInt64(const std::string& name, const std::vector<int64_t>& shape, const std::vector<int64_t>& values);
v1::Tensor RawBytes(const std::string& name, const std::vector<int64_t>& shape,
                    const std::vector<std::string>& values);

// Typed tensors: the values in the repeated field for the data type.
v1::Tensor TypedFp32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& values);
v1::Tensor TypedInt64(const std::string& name, const std::vector<int64_t>& shape,
                      const std::vector<int64_t>& values);
v1::Tensor TypedBytes(const std::string& name, const std::vector<int64_t>& shape,
                      const std::vector<std::string>& values);

// A tensor's values, read from raw_contents or from the typed field, whichever carries them. Throws
// std::invalid_argument on a data type other than the one asked for or a count that does not match the shape.
std::vector<float> Fp32Values(const v1::Tensor& tensor);
std::vector<int64_t> Int64Values(const v1::Tensor& tensor);
std::vector<std::string> BytesValues(const v1::Tensor& tensor);

// The tensor's shape as a vector.
std::vector<int64_t> ShapeOf(const v1::Tensor& tensor);

}  // namespace inferd

#endif  // INFERD_CLIENTS_CPP_TENSORS_H_
