// Package inferd holds small helpers for the tensors of the inferd.v1 protocol (docs/protocol.md):
// building them raw (little-endian, row-major bytes in raw_contents — the fast path) or typed (one
// repeated field, as grpcurl users write them), and reading the values back from either form.
//
// Raw tensors are always little-endian, whatever the host: every value goes through
// encoding/binary.LittleEndian. BYTES elements travel raw as a 4-byte little-endian length followed
// by that many bytes, one after another, with nothing else.
package inferd

import (
	"encoding/binary"
	"fmt"
	"math"

	inferdv1 "github.com/inferd/inferd/clients/go/inferdv1"
)

// ElementCount is the product of the shape's dimensions (1 for a scalar shape []); it fails on a
// negative dimension or a product that does not fit an int.
func ElementCount(shape []int64) (int, error) {
	count := int64(1)
	for _, dim := range shape {
		if dim < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if dim != 0 && count > int64(math.MaxInt)/dim {
			return 0, fmt.Errorf("shape %v holds too many elements", shape)
		}
		count *= dim
	}
	return int(count), nil
}

func newTensor(name string, dataType inferdv1.DataType, shape []int64) *inferdv1.Tensor {
	return &inferdv1.Tensor{Name: name, DataType: dataType, Shape: append([]int64(nil), shape...)}
}

// RawFP32 is an FP32 tensor with its values in raw_contents (4 bytes each, little-endian).
func RawFP32(name string, shape []int64, values []float32) *inferdv1.Tensor {
	raw := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_FP32, shape)
	t.RawContents = raw
	return t
}

// RawFP64 is an FP64 tensor with its values in raw_contents (8 bytes each, little-endian).
func RawFP64(name string, shape []int64, values []float64) *inferdv1.Tensor {
	raw := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(raw[8*i:], math.Float64bits(v))
	}
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_FP64, shape)
	t.RawContents = raw
	return t
}

// RawInt32 is an INT32 tensor with its values in raw_contents (4 bytes each, little-endian).
func RawInt32(name string, shape []int64, values []int32) *inferdv1.Tensor {
	raw := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(raw[4*i:], uint32(v))
	}
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_INT32, shape)
	t.RawContents = raw
	return t
}

// RawInt64 is an INT64 tensor with its values in raw_contents (8 bytes each, little-endian).
func RawInt64(name string, shape []int64, values []int64) *inferdv1.Tensor {
	raw := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_INT64, shape)
	t.RawContents = raw
	return t
}

// RawBool is a BOOL tensor with its values in raw_contents (one byte each, 0 or 1).
func RawBool(name string, shape []int64, values []bool) *inferdv1.Tensor {
	raw := make([]byte, len(values))
	for i, v := range values {
		if v {
			raw[i] = 1
		}
	}
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_BOOL, shape)
	t.RawContents = raw
	return t
}

// RawBytes is a BYTES tensor with its elements in raw_contents, each as a 4-byte little-endian
// length and its bytes (EncodeBytes).
func RawBytes(name string, shape []int64, values [][]byte) *inferdv1.Tensor {
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_BYTES, shape)
	t.RawContents = EncodeBytes(values)
	return t
}

// RawStrings is RawBytes of the strings' UTF-8 bytes.
func RawStrings(name string, shape []int64, values []string) *inferdv1.Tensor {
	elements := make([][]byte, len(values))
	for i, v := range values {
		elements[i] = []byte(v)
	}
	return RawBytes(name, shape, elements)
}

// EncodeBytes lays BYTES elements out as raw_contents: for each, a 4-byte little-endian length and
// then its bytes. It panics on an element of 4 GiB or more, which no length prefix can describe.
func EncodeBytes(values [][]byte) []byte {
	size := 0
	for _, v := range values {
		if uint64(len(v)) > math.MaxUint32 {
			panic(fmt.Sprintf("a BYTES element of %d bytes does not fit a 4-byte length", len(v)))
		}
		size += 4 + len(v)
	}
	raw := make([]byte, size)
	offset := 0
	for _, v := range values {
		binary.LittleEndian.PutUint32(raw[offset:], uint32(len(v)))
		offset += 4 + copy(raw[offset+4:], v)
	}
	return raw
}

// DecodeBytes splits raw_contents into exactly count BYTES elements (sub-slices of raw, not copies).
// Too few elements, a length running past the end, or bytes left over are errors, as on the server.
func DecodeBytes(raw []byte, count int) ([][]byte, error) {
	values := make([][]byte, 0, count)
	offset := 0
	for i := 0; i < count; i++ {
		if len(raw)-offset < 4 {
			return nil, fmt.Errorf("BYTES element %d: no 4-byte length at offset %d (%d bytes)", i, offset, len(raw))
		}
		length := uint64(binary.LittleEndian.Uint32(raw[offset:]))
		offset += 4
		if length > uint64(len(raw)-offset) {
			return nil, fmt.Errorf("BYTES element %d: length %d runs past the end (%d bytes left)", i, length, len(raw)-offset)
		}
		values = append(values, raw[offset:offset+int(length)])
		offset += int(length)
	}
	if offset != len(raw) {
		return nil, fmt.Errorf("BYTES: %d bytes left over after %d elements", len(raw)-offset, count)
	}
	return values, nil
}

// TypedFP32 is an FP32 tensor with its values in fp32_contents.
func TypedFP32(name string, shape []int64, values []float32) *inferdv1.Tensor {
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_FP32, shape)
	t.Fp32Contents = append([]float32(nil), values...)
	return t
}

// TypedInt64 is an INT64 tensor with its values in int64_contents.
func TypedInt64(name string, shape []int64, values []int64) *inferdv1.Tensor {
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_INT64, shape)
	t.Int64Contents = append([]int64(nil), values...)
	return t
}

// TypedBytes is a BYTES tensor with its elements in bytes_contents.
func TypedBytes(name string, shape []int64, values [][]byte) *inferdv1.Tensor {
	t := newTensor(name, inferdv1.DataType_DATA_TYPE_BYTES, shape)
	t.BytesContents = append([][]byte(nil), values...)
	return t
}

// rawFixed checks a fixed-width raw tensor's data type and length against its shape, and returns
// its element count.
func rawFixed(t *inferdv1.Tensor, want inferdv1.DataType, itemsize int) (int, error) {
	count, err := header(t, want)
	if err != nil {
		return 0, err
	}
	if len(t.RawContents) != count*itemsize {
		return 0, fmt.Errorf("tensor %q: raw_contents has %d bytes, shape %v needs %d", t.Name, len(t.RawContents), t.Shape, count*itemsize)
	}
	return count, nil
}

func header(t *inferdv1.Tensor, want inferdv1.DataType) (int, error) {
	if t == nil {
		return 0, fmt.Errorf("no tensor")
	}
	if t.DataType != want {
		return 0, fmt.Errorf("tensor %q is %v, not %v", t.Name, t.DataType, want)
	}
	count, err := ElementCount(t.Shape)
	if err != nil {
		return 0, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return count, nil
}

func typedCount(t *inferdv1.Tensor, count, got int) error {
	if got != count {
		return fmt.Errorf("tensor %q: %d typed values, shape %v needs %d", t.Name, got, t.Shape, count)
	}
	return nil
}

// FP32Values reads an FP32 tensor, raw or typed.
func FP32Values(t *inferdv1.Tensor) ([]float32, error) {
	if t != nil && len(t.RawContents) == 0 {
		count, err := header(t, inferdv1.DataType_DATA_TYPE_FP32)
		if err != nil {
			return nil, err
		}
		return t.Fp32Contents, typedCount(t, count, len(t.Fp32Contents))
	}
	count, err := rawFixed(t, inferdv1.DataType_DATA_TYPE_FP32, 4)
	if err != nil {
		return nil, err
	}
	values := make([]float32, count)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.RawContents[4*i:]))
	}
	return values, nil
}

// FP64Values reads an FP64 tensor, raw or typed.
func FP64Values(t *inferdv1.Tensor) ([]float64, error) {
	if t != nil && len(t.RawContents) == 0 {
		count, err := header(t, inferdv1.DataType_DATA_TYPE_FP64)
		if err != nil {
			return nil, err
		}
		return t.Fp64Contents, typedCount(t, count, len(t.Fp64Contents))
	}
	count, err := rawFixed(t, inferdv1.DataType_DATA_TYPE_FP64, 8)
	if err != nil {
		return nil, err
	}
	values := make([]float64, count)
	for i := range values {
		values[i] = math.Float64frombits(binary.LittleEndian.Uint64(t.RawContents[8*i:]))
	}
	return values, nil
}

// Int32Values reads an INT32 tensor, raw or typed.
func Int32Values(t *inferdv1.Tensor) ([]int32, error) {
	if t != nil && len(t.RawContents) == 0 {
		count, err := header(t, inferdv1.DataType_DATA_TYPE_INT32)
		if err != nil {
			return nil, err
		}
		return t.Int32Contents, typedCount(t, count, len(t.Int32Contents))
	}
	count, err := rawFixed(t, inferdv1.DataType_DATA_TYPE_INT32, 4)
	if err != nil {
		return nil, err
	}
	values := make([]int32, count)
	for i := range values {
		values[i] = int32(binary.LittleEndian.Uint32(t.RawContents[4*i:]))
	}
	return values, nil
}

// Int64Values reads an INT64 tensor, raw or typed.
func Int64Values(t *inferdv1.Tensor) ([]int64, error) {
	if t != nil && len(t.RawContents) == 0 {
		count, err := header(t, inferdv1.DataType_DATA_TYPE_INT64)
		if err != nil {
			return nil, err
		}
		return t.Int64Contents, typedCount(t, count, len(t.Int64Contents))
	}
	count, err := rawFixed(t, inferdv1.DataType_DATA_TYPE_INT64, 8)
	if err != nil {
		return nil, err
	}
	values := make([]int64, count)
	for i := range values {
		values[i] = int64(binary.LittleEndian.Uint64(t.RawContents[8*i:]))
	}
	return values, nil
}

// BoolValues reads a BOOL tensor, raw or typed.
func BoolValues(t *inferdv1.Tensor) ([]bool, error) {
	if t != nil && len(t.RawContents) == 0 {
		count, err := header(t, inferdv1.DataType_DATA_TYPE_BOOL)
		if err != nil {
			return nil, err
		}
		return t.BoolContents, typedCount(t, count, len(t.BoolContents))
	}
	count, err := rawFixed(t, inferdv1.DataType_DATA_TYPE_BOOL, 1)
	if err != nil {
		return nil, err
	}
	values := make([]bool, count)
	for i, b := range t.RawContents {
		values[i] = b != 0
	}
	return values, nil
}

// BytesValues reads a BYTES tensor, raw (length-prefixed) or typed.
func BytesValues(t *inferdv1.Tensor) ([][]byte, error) {
	count, err := header(t, inferdv1.DataType_DATA_TYPE_BYTES)
	if err != nil {
		return nil, err
	}
	if len(t.RawContents) == 0 && (count == 0 || len(t.BytesContents) > 0) {
		return t.BytesContents, typedCount(t, count, len(t.BytesContents))
	}
	values, err := DecodeBytes(t.RawContents, count)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return values, nil
}

// Output is the tensor called name among outputs, or nil.
func Output(outputs []*inferdv1.Tensor, name string) *inferdv1.Tensor {
	for _, t := range outputs {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}
