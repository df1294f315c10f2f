package dev.inferd.client;

import com.google.protobuf.ByteString;
import dev.inferd.v1.DataType;
import dev.inferd.v1.Tensor;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * Builds and reads {@code inferd.v1.Tensor} messages in both of their forms (docs/protocol.md):
 *
 * <ul>
 *   <li><b>raw</b> ({@code raw_contents}): little-endian, row-major bytes, the fast path. Java's {@link ByteBuffer}
 *       is big-endian by default, and a big-endian FP32 tensor is still a valid tensor to the server, so a client
 *       that forgets the byte order gets silently wrong predictions. Every buffer here is set to
 *       {@link ByteOrder#LITTLE_ENDIAN} explicitly. A BYTES element is a 4-byte little-endian length followed by
 *       its bytes.
 *   <li><b>typed</b> ({@code fp32_contents}, {@code int64_contents}, {@code bytes_contents}, ...): one repeated field
 *       per element type; the server answers typed when every input was typed.
 * </ul>
 *
 * <p>The readers accept either form, so they work whatever {@code output_encoding} the reply was given.
 * {@code java dev.inferd.client.Tensors} runs a self-check of the encodings.
 */
public final class Tensors {
  private Tensors() {}

  private static ByteBuffer littleEndian(int size) {
    return ByteBuffer.allocate(size).order(ByteOrder.LITTLE_ENDIAN);
  }

  private static ByteBuffer littleEndian(ByteString bytes) {
    return bytes.asReadOnlyByteBuffer().order(ByteOrder.LITTLE_ENDIAN);
  }

  private static Tensor.Builder header(String name, DataType type, long[] shape, long elements) {
    long expected = 1;
    for (long d : shape) {
      if (d < 0) {
        throw new IllegalArgumentException("tensor '" + name + "': shape " + Arrays.toString(shape) + " has a negative dimension");
      }
      expected *= d;
    }
    if (expected != elements) {
      throw new IllegalArgumentException(
          "tensor '" + name + "': shape " + Arrays.toString(shape) + " holds " + expected + " elements, got " + elements);
    }
    Tensor.Builder builder = Tensor.newBuilder().setName(name).setDataType(type);
    for (long d : shape) {
      builder.addShape(d);
    }
    return builder;
  }

  // ---- encoders: raw (little-endian) ----

  /** FP32 elements as little-endian bytes. */
  public static byte[] encodeFloats(float... values) {
    ByteBuffer buffer = littleEndian(4 * values.length);
    buffer.asFloatBuffer().put(values);
    return buffer.array();
  }

  /** INT64 elements as little-endian bytes. */
  public static byte[] encodeLongs(long... values) {
    ByteBuffer buffer = littleEndian(8 * values.length);
    buffer.asLongBuffer().put(values);
    return buffer.array();
  }

  /** BYTES elements: each a 4-byte little-endian length, then its bytes. */
  public static byte[] encodeBytes(List<byte[]> elements) {
    int size = 0;
    for (byte[] e : elements) {
      size += 4 + e.length;
    }
    ByteBuffer buffer = littleEndian(size);
    for (byte[] e : elements) {
      buffer.putInt(e.length).put(e);
    }
    return buffer.array();
  }

  /** A raw FP32 tensor. */
  public static Tensor fp32(String name, long[] shape, float... values) {
    return header(name, DataType.DATA_TYPE_FP32, shape, values.length)
        .setRawContents(ByteString.copyFrom(encodeFloats(values)))
        .build();
  }

  /** A raw INT64 tensor. */
  public static Tensor int64(String name, long[] shape, long... values) {
    return header(name, DataType.DATA_TYPE_INT64, shape, values.length)
        .setRawContents(ByteString.copyFrom(encodeLongs(values)))
        .build();
  }

  /** A raw BYTES tensor of UTF-8 strings (length-prefixed elements). */
  public static Tensor strings(String name, long[] shape, String... values) {
    return header(name, DataType.DATA_TYPE_BYTES, shape, values.length)
        .setRawContents(ByteString.copyFrom(encodeBytes(utf8(values))))
        .build();
  }

  // ---- encoders: typed fields ----

  /** A typed FP32 tensor (fp32_contents). */
  public static Tensor fp32Typed(String name, long[] shape, float... values) {
    Tensor.Builder builder = header(name, DataType.DATA_TYPE_FP32, shape, values.length);
    for (float v : values) {
      builder.addFp32Contents(v);
    }
    return builder.build();
  }

  /** A typed INT64 tensor (int64_contents). */
  public static Tensor int64Typed(String name, long[] shape, long... values) {
    Tensor.Builder builder = header(name, DataType.DATA_TYPE_INT64, shape, values.length);
    for (long v : values) {
      builder.addInt64Contents(v);
    }
    return builder.build();
  }

  /** A typed BYTES tensor of UTF-8 strings (bytes_contents, no length prefixes). */
  public static Tensor stringsTyped(String name, long[] shape, String... values) {
    Tensor.Builder builder = header(name, DataType.DATA_TYPE_BYTES, shape, values.length);
    for (String v : values) {
      builder.addBytesContents(ByteString.copyFromUtf8(v));
    }
    return builder.build();
  }

  // ---- decoders: raw or typed ----

  private static void expect(Tensor tensor, DataType type) {
    if (tensor.getDataType() != type) {
      throw new IllegalArgumentException("tensor '" + tensor.getName() + "' is " + tensor.getDataType() + ", not " + type);
    }
  }

  /** Whether the tensor travelled as raw_contents (else typed fields). */
  public static boolean isRaw(Tensor tensor) {
    return !tensor.getRawContents().isEmpty();
  }

  /** The elements of an FP32 tensor, raw or typed. */
  public static float[] toFloats(Tensor tensor) {
    expect(tensor, DataType.DATA_TYPE_FP32);
    if (isRaw(tensor)) {
      ByteBuffer buffer = littleEndian(tensor.getRawContents());
      float[] out = new float[buffer.remaining() / 4];
      buffer.asFloatBuffer().get(out);
      return out;
    }
    float[] out = new float[tensor.getFp32ContentsCount()];
    for (int i = 0; i < out.length; i++) {
      out[i] = tensor.getFp32Contents(i);
    }
    return out;
  }

  /** The elements of an INT64 tensor, raw or typed. */
  public static long[] toLongs(Tensor tensor) {
    expect(tensor, DataType.DATA_TYPE_INT64);
    if (isRaw(tensor)) {
      ByteBuffer buffer = littleEndian(tensor.getRawContents());
      long[] out = new long[buffer.remaining() / 8];
      buffer.asLongBuffer().get(out);
      return out;
    }
    return tensor.getInt64ContentsList().stream().mapToLong(Long::longValue).toArray();
  }

  /** The elements of a BYTES tensor, raw (length-prefixed) or typed. */
  public static List<byte[]> toBytes(Tensor tensor) {
    expect(tensor, DataType.DATA_TYPE_BYTES);
    List<byte[]> out = new ArrayList<>();
    if (isRaw(tensor)) {
      ByteBuffer buffer = littleEndian(tensor.getRawContents());
      while (buffer.hasRemaining()) {
        if (buffer.remaining() < 4) {
          throw new IllegalArgumentException("tensor '" + tensor.getName() + "': truncated BYTES length prefix");
        }
        int length = buffer.getInt();
        if (length < 0 || length > buffer.remaining()) {
          throw new IllegalArgumentException("tensor '" + tensor.getName() + "': BYTES element of " + length + " bytes overruns the data");
        }
        byte[] element = new byte[length];
        buffer.get(element);
        out.add(element);
      }
      return out;
    }
    for (ByteString b : tensor.getBytesContentsList()) {
      out.add(b.toByteArray());
    }
    return out;
  }

  /** The elements of a BYTES tensor decoded as UTF-8. */
  public static List<String> toStrings(Tensor tensor) {
    List<String> out = new ArrayList<>();
    for (byte[] b : toBytes(tensor)) {
      out.add(new String(b, StandardCharsets.UTF_8));
    }
    return out;
  }

  private static List<byte[]> utf8(String... values) {
    List<byte[]> out = new ArrayList<>();
    for (String v : values) {
      out.add(v.getBytes(StandardCharsets.UTF_8));
    }
    return out;
  }

  /** Lower-case hex, for printing encodings. */
  public static String hex(byte[] bytes) {
    StringBuilder s = new StringBuilder();
    for (byte b : bytes) {
      s.append(String.format("%02x", b & 0xff));
    }
    return s.toString();
  }

  private static void check(String what, String got, String want) {
    if (!got.equals(want)) {
      throw new AssertionError(what + ": got " + got + ", want " + want);
    }
  }

  /** Self-check of the little-endian encodings (run by {@code make clients-java}); exits non-zero on a mismatch. */
  public static void main(String[] args) {
    try {
      check("FP32 1.0f", hex(encodeFloats(1.0f)), "0000803f");
      check("FP32 -2.5f", hex(encodeFloats(-2.5f)), "000020c0");
      check("INT64 1", hex(encodeLongs(1L)), "0100000000000000");
      check("INT64 -2", hex(encodeLongs(-2L)), "feffffffffffffff");
      check("BYTES [\"hi\", \"\"]", hex(encodeBytes(utf8("hi", ""))), "020000006869" + "00000000");
      Tensor f = fp32("x", new long[] {1, 3}, 1.0f, -2.5f, 3.25f);
      check("FP32 raw round trip", Arrays.toString(toFloats(f)), "[1.0, -2.5, 3.25]");
      check("FP32 typed round trip", Arrays.toString(toFloats(fp32Typed("x", new long[] {3}, 1.0f, -2.5f, 3.25f))), "[1.0, -2.5, 3.25]");
      check("INT64 raw round trip", Arrays.toString(toLongs(int64("i", new long[] {2}, 7L, -9L))), "[7, -9]");
      check("BYTES raw round trip", toStrings(strings("s", new long[] {2}, "héllo", "")).toString(), "[héllo, ]");
      check("BYTES typed round trip", toStrings(stringsTyped("s", new long[] {1}, "typed")).toString(), "[typed]");
      try {
        fp32("x", new long[] {2, 2}, 1.0f);
        throw new AssertionError("a shape/element mismatch was accepted");
      } catch (IllegalArgumentException expected) {
        // the shape [2, 2] holds 4 elements, not 1
      }
    } catch (AssertionError e) {
      System.err.println("Java tensor encoding self-check FAILED: " + e.getMessage());
      System.exit(1);
    }
    System.out.println("Java tensor encoding self-check ok: FP32 1.0f = 0000803f (little-endian), BYTES \"hi\" = 020000006869");
  }
}
