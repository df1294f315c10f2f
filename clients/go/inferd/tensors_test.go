package inferd

import (
	"bytes"
	"math"
	"reflect"
	"strings"
	"testing"

	inferdv1 "github.com/inferd/inferd/clients/go/inferdv1"
)

// The byte layouts below are written out by hand: little-endian whatever the host, as the server
// reads them (numpy '<f4', '<i8', ...).

func TestRawFP32IsLittleEndian(t *testing.T) {
	tensor := RawFP32("features", []int64{1, 2}, []float32{1.0, -2.5})
	want := []byte{0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0}
	if !bytes.Equal(tensor.RawContents, want) {
		t.Fatalf("raw_contents = % x, want % x", tensor.RawContents, want)
	}
	if tensor.DataType != inferdv1.DataType_DATA_TYPE_FP32 || !reflect.DeepEqual(tensor.Shape, []int64{1, 2}) || tensor.Name != "features" {
		t.Fatalf("header = %v %v %q", tensor.DataType, tensor.Shape, tensor.Name)
	}
	values, err := FP32Values(tensor)
	if err != nil || !reflect.DeepEqual(values, []float32{1.0, -2.5}) {
		t.Fatalf("FP32Values = %v, %v", values, err)
	}
}

func TestRawIntegersAndFP64AreLittleEndian(t *testing.T) {
	i64 := RawInt64("ids", []int64{2}, []int64{1, -2})
	want := []byte{1, 0, 0, 0, 0, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if !bytes.Equal(i64.RawContents, want) {
		t.Fatalf("INT64 raw = % x, want % x", i64.RawContents, want)
	}
	if got, err := Int64Values(i64); err != nil || !reflect.DeepEqual(got, []int64{1, -2}) {
		t.Fatalf("Int64Values = %v, %v", got, err)
	}
	i32 := RawInt32("x", []int64{1}, []int32{0x01020304})
	if !bytes.Equal(i32.RawContents, []byte{4, 3, 2, 1}) {
		t.Fatalf("INT32 raw = % x", i32.RawContents)
	}
	if got, err := Int32Values(i32); err != nil || got[0] != 0x01020304 {
		t.Fatalf("Int32Values = %v, %v", got, err)
	}
	f64 := RawFP64("y", []int64{1}, []float64{1.0})
	if !bytes.Equal(f64.RawContents, []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}) {
		t.Fatalf("FP64 raw = % x", f64.RawContents)
	}
	if got, err := FP64Values(f64); err != nil || got[0] != 1.0 {
		t.Fatalf("FP64Values = %v, %v", got, err)
	}
	b := RawBool("m", []int64{3}, []bool{true, false, true})
	if !bytes.Equal(b.RawContents, []byte{1, 0, 1}) {
		t.Fatalf("BOOL raw = % x", b.RawContents)
	}
	if got, err := BoolValues(b); err != nil || !reflect.DeepEqual(got, []bool{true, false, true}) {
		t.Fatalf("BoolValues = %v, %v", got, err)
	}
}

func TestRawBytesHaveFourByteLittleEndianLengths(t *testing.T) {
	// docs/protocol.md: "hi" and "abc" as a tensor of shape [2]
	tensor := RawStrings("text", []int64{2}, []string{"hi", "abc"})
	want := []byte{0x02, 0x00, 0x00, 0x00, 0x68, 0x69, 0x03, 0x00, 0x00, 0x00, 0x61, 0x62, 0x63}
	if !bytes.Equal(tensor.RawContents, want) {
		t.Fatalf("raw_contents = % x, want % x", tensor.RawContents, want)
	}
	values, err := BytesValues(tensor)
	if err != nil || len(values) != 2 || string(values[0]) != "hi" || string(values[1]) != "abc" {
		t.Fatalf("BytesValues = %q, %v", values, err)
	}
	// an empty element and a 300-byte one (the length's second byte matters)
	long := bytes.Repeat([]byte{'x'}, 300)
	raw := EncodeBytes([][]byte{{}, long})
	if !bytes.Equal(raw[:8], []byte{0, 0, 0, 0, 0x2c, 0x01, 0, 0}) || len(raw) != 8+300 {
		t.Fatalf("EncodeBytes = % x… (%d bytes)", raw[:8], len(raw))
	}
	back, err := DecodeBytes(raw, 2)
	if err != nil || len(back[0]) != 0 || !bytes.Equal(back[1], long) {
		t.Fatalf("DecodeBytes = %d elements, %v", len(back), err)
	}
}

func TestDecodeBytesRefusesWhatTheServerRefuses(t *testing.T) {
	cases := map[string]struct {
		raw   []byte
		count int
		want  string
	}{
		"too few elements":     {[]byte{1, 0, 0, 0, 'a'}, 2, "no 4-byte length"},
		"length past the end":  {[]byte{5, 0, 0, 0, 'a'}, 1, "runs past the end"},
		"bytes left over":      {[]byte{1, 0, 0, 0, 'a', 'b'}, 1, "left over"},
		"truncated length":     {[]byte{1, 0}, 1, "no 4-byte length"},
		"huge length, no wrap": {[]byte{0xff, 0xff, 0xff, 0xff, 'a'}, 1, "runs past the end"},
	}
	for name, c := range cases {
		if _, err := DecodeBytes(c.raw, c.count); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestTypedTensorsUseTheirField(t *testing.T) {
	text := TypedBytes("text", []int64{1}, [][]byte{[]byte("hi")})
	if len(text.RawContents) != 0 || len(text.BytesContents) != 1 || text.DataType != inferdv1.DataType_DATA_TYPE_BYTES {
		t.Fatalf("TypedBytes = %v", text)
	}
	if got, err := BytesValues(text); err != nil || string(got[0]) != "hi" {
		t.Fatalf("BytesValues(typed) = %q, %v", got, err)
	}
	f := TypedFP32("f", []int64{2}, []float32{0.5, 1.5})
	if got, err := FP32Values(f); err != nil || !reflect.DeepEqual(got, []float32{0.5, 1.5}) || len(f.RawContents) != 0 {
		t.Fatalf("FP32Values(typed) = %v, %v", got, err)
	}
	ids := TypedInt64("ids", []int64{1, 2}, []int64{7, 8})
	if got, err := Int64Values(ids); err != nil || !reflect.DeepEqual(got, []int64{7, 8}) {
		t.Fatalf("Int64Values(typed) = %v, %v", got, err)
	}
}

func TestReadersCheckDataTypeAndLength(t *testing.T) {
	if _, err := FP32Values(RawInt64("x", []int64{1}, []int64{1})); err == nil || !strings.Contains(err.Error(), "not DATA_TYPE_FP32") {
		t.Errorf("a wrong data type: %v", err)
	}
	short := RawFP32("x", []int64{2, 2}, []float32{1, 2, 3})
	if _, err := FP32Values(short); err == nil || !strings.Contains(err.Error(), "needs 16") {
		t.Errorf("a short raw tensor: %v", err)
	}
	typed := TypedFP32("x", []int64{3}, []float32{1})
	if _, err := FP32Values(typed); err == nil || !strings.Contains(err.Error(), "needs 3") {
		t.Errorf("too few typed values: %v", err)
	}
	if _, err := FP32Values(nil); err == nil {
		t.Errorf("a nil tensor reads without error")
	}
	empty := RawFP32("x", []int64{0, 256}, nil)
	if got, err := FP32Values(empty); err != nil || len(got) != 0 {
		t.Errorf("an empty tensor: %v, %v", got, err)
	}
}

func TestElementCount(t *testing.T) {
	for _, c := range []struct {
		shape []int64
		want  int
	}{{nil, 1}, {[]int64{}, 1}, {[]int64{2, 3}, 6}, {[]int64{0, math.MaxInt64}, 0}} {
		if got, err := ElementCount(c.shape); err != nil || got != c.want {
			t.Errorf("ElementCount(%v) = %d, %v; want %d", c.shape, got, err, c.want)
		}
	}
	for _, shape := range [][]int64{{-1}, {math.MaxInt64, 2}} {
		if _, err := ElementCount(shape); err == nil {
			t.Errorf("ElementCount(%v) has no error", shape)
		}
	}
}

func TestOutputFindsByName(t *testing.T) {
	outputs := []*inferdv1.Tensor{{Name: "a"}, {Name: "b"}}
	if Output(outputs, "b") != outputs[1] || Output(outputs, "c") != nil {
		t.Fatal("Output does not find by name")
	}
}
