#include "tensors.h"

#include <algorithm>
#include <cstddef>

namespace inferd {

namespace {

void CheckCount(const std::string& name, const std::vector<int64_t>& shape, size_t count) {
  const int64_t expected = ElementCount(shape);
  if (expected != static_cast<int64_t>(count)) {
    throw std::invalid_argument("tensor '" + name + "': the shape holds " + std::to_string(expected) +
                                " elements but " + std::to_string(count) + " values were given");
  }
}

v1::Tensor Header(const std::string& name, v1::DataType data_type, const std::vector<int64_t>& shape) {
  v1::Tensor tensor;
  tensor.set_name(name);
  tensor.set_data_type(data_type);
  for (int64_t dim : shape) tensor.add_shape(dim);
  return tensor;
}

void CheckType(const v1::Tensor& tensor, v1::DataType wanted) {
  if (tensor.data_type() != wanted) {
    throw std::invalid_argument("tensor '" + tensor.name() + "' is " + v1::DataType_Name(tensor.data_type()) +
                                ", not " + v1::DataType_Name(wanted));
  }
}

template <typename T, typename Field>
std::vector<T> FixedValues(const v1::Tensor& tensor, const Field& typed) {
  const int64_t count = ElementCount(ShapeOf(tensor));
  std::vector<T> values = tensor.raw_contents().empty() ? std::vector<T>(typed.begin(), typed.end())
                                                         : DecodeLittleEndian<T>(tensor.raw_contents());
  if (static_cast<int64_t>(values.size()) != count) {
    throw std::invalid_argument("tensor '" + tensor.name() + "' holds " + std::to_string(values.size()) +
                                " values for a shape of " + std::to_string(count) + " elements");
  }
  return values;
}

uint32_t ReadLengthLE(const std::string& raw, size_t at) {
  uint32_t length = 0;
  for (int i = 3; i >= 0; --i) length = (length << 8) | static_cast<unsigned char>(raw[at + i]);
  return length;
}

}  // namespace

bool HostIsLittleEndian() {
  static const bool little = [] {
    const uint32_t one = 1;
    unsigned char first = 0;
    std::memcpy(&first, &one, 1);
    return first == 1;
  }();
  return little;
}

void ReverseEachElement(std::string* bytes, size_t width) {
  for (size_t i = 0; i + width <= bytes->size(); i += width) {
    const auto first = bytes->begin() + static_cast<std::ptrdiff_t>(i);
    std::reverse(first, first + static_cast<std::ptrdiff_t>(width));
  }
}

int64_t ElementCount(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) throw std::invalid_argument("negative dimension " + std::to_string(dim));
    count *= dim;
  }
  return count;
}

std::string EncodeBytes(const std::vector<std::string>& elements) {
  std::string out;
  for (const std::string& element : elements) {
    if (element.size() > UINT32_MAX) throw std::invalid_argument("a BYTES element is longer than 4 GiB");
    const auto length = static_cast<uint32_t>(element.size());
    // the length byte by byte, least significant first: little-endian on any host
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xFF));
    out += element;
  }
  return out;
}

std::vector<std::string> DecodeBytes(const std::string& raw, int64_t count) {
  std::vector<std::string> out;
  size_t at = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (raw.size() - at < 4) {
      throw std::invalid_argument("BYTES element " + std::to_string(i) + " has no 4-byte length (" +
                                  std::to_string(raw.size()) + " bytes for " + std::to_string(count) + " elements)");
    }
    const uint32_t length = ReadLengthLE(raw, at);
    at += 4;
    if (raw.size() - at < length) {
      throw std::invalid_argument("BYTES element " + std::to_string(i) + " of length " + std::to_string(length) +
                                  " runs past the end");
    }
    out.emplace_back(raw, at, length);
    at += length;
  }
  if (at != raw.size()) {
    throw std::invalid_argument(std::to_string(raw.size() - at) + " bytes left over after " +
                                std::to_string(count) + " BYTES elements");
  }
  return out;
}

v1::Tensor RawFp32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& values) {
  CheckCount(name, shape, values.size());
  v1::Tensor tensor = Header(name, v1::DATA_TYPE_FP32, shape);
  tensor.set_raw_contents(EncodeLittleEndian(values));
  return tensor;
}

v1::Tensor RawInt64(const std::string& name, const std::vector<int64_t>& shape, const std::vector<int64_t>& values) {
  CheckCount(name, shape, values.size());
  v1::Tensor tensor = Header(name, v1::DATA_TYPE_INT64, shape);
  tensor.set_raw_contents(EncodeLittleEndian(values));
  return tensor;
}

v1::Tensor RawBytes(const std::string& name, const std::vector<int64_t>& shape,
                    const std::vector<std::string>& values) {
  CheckCount(name, shape, values.size());
  v1::Tensor tensor = Header(name, v1::DATA_TYPE_BYTES, shape);
  tensor.set_raw_contents(EncodeBytes(values));
  return tensor;
}

v1::Tensor TypedFp32(const std::string& name, const std::vector<int64_t>& shape, const std::vector<float>& values) {
  CheckCount(name, shape, values.size());
  v1::Tensor tensor = Header(name, v1::DATA_TYPE_FP32, shape);
  tensor.mutable_fp32_contents()->Add(values.begin(), values.end());
  return tensor;
}

v1::Tensor TypedInt64(const std::string& name, const std::vector<int64_t>& shape,
                      const std::vector<int64_t>& values) {
  CheckCount(name, shape, values.size());
  v1::Tensor tensor = Header(name, v1::DATA_TYPE_INT64, shape);
  tensor.mutable_int64_contents()->Add(values.begin(), values.end());
  return tensor;
}

v1::Tensor TypedBytes(const std::string& name, const std::vector<int64_t>& shape,
                      const std::vector<std::string>& values) {
  CheckCount(name, shape, values.size());
  v1::Tensor tensor = Header(name, v1::DATA_TYPE_BYTES, shape);
  for (const std::string& value : values) tensor.add_bytes_contents(value);
  return tensor;
}

std::vector<float> Fp32Values(const v1::Tensor& tensor) {
  CheckType(tensor, v1::DATA_TYPE_FP32);
  return FixedValues<float>(tensor, tensor.fp32_contents());
}

std::vector<int64_t> Int64Values(const v1::Tensor& tensor) {
  CheckType(tensor, v1::DATA_TYPE_INT64);
  return FixedValues<int64_t>(tensor, tensor.int64_contents());
}

std::vector<std::string> BytesValues(const v1::Tensor& tensor) {
  CheckType(tensor, v1::DATA_TYPE_BYTES);
  const int64_t count = ElementCount(ShapeOf(tensor));
  if (tensor.raw_contents().empty()) {
    if (tensor.bytes_contents_size() != count) {
      throw std::invalid_argument("tensor '" + tensor.name() + "' holds " +
                                  std::to_string(tensor.bytes_contents_size()) + " values for a shape of " +
                                  std::to_string(count) + " elements");
    }
    return {tensor.bytes_contents().begin(), tensor.bytes_contents().end()};
  }
  return DecodeBytes(tensor.raw_contents(), count);
}

std::vector<int64_t> ShapeOf(const v1::Tensor& tensor) { return {tensor.shape().begin(), tensor.shape().end()}; }

}  // namespace inferd
