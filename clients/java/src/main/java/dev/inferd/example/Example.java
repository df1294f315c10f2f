package dev.inferd.example;

import dev.inferd.client.Tensors;
import dev.inferd.v1.InferenceServiceGrpc;
import dev.inferd.v1.Parameter;
import dev.inferd.v1.PredictRequest;
import dev.inferd.v1.PredictResponse;
import dev.inferd.v1.PredictStreamRequest;
import dev.inferd.v1.PredictStreamResponse;
import dev.inferd.v1.Tensor;
import io.grpc.ChannelCredentials;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Calls inferd from Java with stubs generated from protos/ (make clients-java): unary Predict with a raw and a typed
 * tensor, a chunked and a generative PredictStream, health Check and Watch, and an error with its status code. Prints
 * one line per step, {@code <step>: <json>}, and exits 1 on any unexpected result, printing "FAIL <step>: ..." to stderr.
 *
 * <pre>java -jar .cache/clients/java/inferd-example.jar 127.0.0.1:8001</pre>
 *
 * <p>TLS and a token come from the environment (docs/security.md, "Clients"): INFERD_TLS_CA (set = TLS),
 * INFERD_TLS_CERT + INFERD_TLS_KEY (mTLS), INFERD_TLS_SERVER_NAME, INFERD_TOKEN ("authorization: Bearer ...").
 */
public final class Example {
  private static final int MESSAGE_LIMIT = 64 * 1024 * 1024; // inferd's default; gRPC clients default to 4 MiB
  private static final long DEADLINE_SECONDS = 10;

  /** The call in progress, named as in the printed lines: a failure is reported as "FAIL <step>: ...". */
  private static String step = "connect";

  private Example() {}

  /** Thrown for a result the example did not expect: printed, then exit 1. */
  static final class Unexpected extends RuntimeException {
    private static final long serialVersionUID = 1L;

    Unexpected(String message) {
      super(message);
    }
  }

  static void require(boolean condition, String message) {
    if (!condition) {
      throw new Unexpected(message);
    }
  }

  static ManagedChannel channel(String address) throws IOException {
    Map<String, String> env = System.getenv();
    ChannelCredentials credentials = InsecureChannelCredentials.create();
    if (env.get("INFERD_TLS_CA") != null) {
      TlsChannelCredentials.Builder tls = TlsChannelCredentials.newBuilder().trustManager(new File(env.get("INFERD_TLS_CA")));
      if (env.get("INFERD_TLS_CERT") != null) {
        tls.keyManager(new File(env.get("INFERD_TLS_CERT")), new File(env.get("INFERD_TLS_KEY")));
      }
      credentials = tls.build();
    }
    ManagedChannelBuilder<?> builder;
    try {
      builder = Grpc.newChannelBuilder(address, credentials).maxInboundMessageSize(MESSAGE_LIMIT);
    } catch (UnsupportedOperationException e) {
      // Debian's libnetty-java leaves out the JDK ALPN negotiator that gRPC over TLS needs (and its tcnative
      // JNI library is not found under the name netty looks for): TLS needs upstream grpc-netty-shaded jars.
      throw new Unexpected("TLS is not available with these jars (" + e.getMessage() + "): use grpc-netty-shaded "
          + "from Maven Central, or a TLS-terminating sidecar (deploy/) in front of a plaintext channel");
    }
    if (env.get("INFERD_TLS_SERVER_NAME") != null) {
      builder.overrideAuthority(env.get("INFERD_TLS_SERVER_NAME"));
    }
    if (env.get("INFERD_TOKEN") != null) {
      Metadata headers = new Metadata();
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + env.get("INFERD_TOKEN"));
      builder.intercept(MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    return builder.build();
  }

  public static void main(String[] args) throws Exception {
    String address = args.length > 0 ? args[0] : "127.0.0.1:8001";
    ManagedChannel channel = null;
    int code = 0;
    try {
      channel = channel(address);
      run(channel);
    } catch (Unexpected e) {
      System.err.println("FAIL " + step + ": " + e.getMessage());
      code = 1;
    } catch (StatusRuntimeException e) {
      System.err.println("FAIL " + step + ": " + e.getStatus().getCode() + ": " + e.getStatus().getDescription());
      code = 1;
    } catch (RuntimeException | IOException e) {
      System.err.println("FAIL " + step + ": " + e);
      code = 1;
    } finally {
      if (channel != null) {
        channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
      }
    }
    System.exit(code);
  }

  static InferenceServiceGrpc.InferenceServiceBlockingStub inference(ManagedChannel channel) {
    // a deadline on every call: the server drops work whose deadline has passed
    return InferenceServiceGrpc.newBlockingStub(channel)
        .withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS)
        .withMaxOutboundMessageSize(MESSAGE_LIMIT);
  }

  /** The features the e2e test recomputes: row r, column c holds ((r * 256 + c) % 7) / 7. */
  static float[] features(int rows) {
    float[] values = new float[rows * 256];
    for (int i = 0; i < values.length; i++) {
      values[i] = (float) ((i % 7) / 7.0);
    }
    return values;
  }

  static Tensor output(List<Tensor> outputs, String name) {
    for (Tensor t : outputs) {
      if (t.getName().equals(name)) {
        return t;
      }
    }
    throw new Unexpected("no output '" + name + "' among " + outputs.size() + " outputs");
  }

  static void run(ManagedChannel channel) {
    // 1. unary Predict, raw little-endian FP32: mlp_ranker features [1, 256] -> score [1, 1]
    step = "predict raw";
    PredictResponse raw =
        inference(channel)
            .predict(
                PredictRequest.newBuilder()
                    .setModelName("mlp_ranker")
                    .setId("java-example")
                    .addInputs(Tensors.fp32("features", new long[] {1, 256}, features(1)))
                    .build());
    Tensor score = output(raw.getOutputsList(), "score");
    require(raw.getModelName().equals("mlp_ranker") && raw.getId().equals("java-example"), "raw Predict answered " + raw.getModelName() + " id " + raw.getId());
    require(score.getShapeList().equals(List.of(1L, 1L)) && Tensors.isRaw(score), "score is " + score.getShapeList() + ", raw " + Tensors.isRaw(score));
    float[] scores = Tensors.toFloats(score);
    require(scores.length == 1 && Float.isFinite(scores[0]), "score values " + java.util.Arrays.toString(scores));
    print("predict raw", Json.obj("model", raw.getModelName(), "version", raw.getModelVersion(), "id", raw.getId(), "shape", score.getShapeList(), "data_type", score.getDataType().name(), "score", scores));

    // 2. unary Predict, typed fields: tokenizer text BYTES [2] (bytes_contents) -> input_ids INT64 [2, 128]
    step = "predict typed";
    PredictResponse typed =
        inference(channel)
            .predict(
                PredictRequest.newBuilder()
                    .setModelName("tokenizer")
                    .addInputs(Tensors.stringsTyped("text", new long[] {2}, "hello world", "inferd from java"))
                    .build());
    Tensor ids = output(typed.getOutputsList(), "input_ids");
    require(!Tensors.isRaw(ids) && ids.getInt64ContentsCount() == 256, "typed request answered raw=" + Tensors.isRaw(ids) + " with " + ids.getInt64ContentsCount() + " typed ints");
    long[] tokens = Tensors.toLongs(ids);
    print("predict typed", Json.obj("model", typed.getModelName(), "shape", ids.getShapeList(), "typed", !Tensors.isRaw(ids), "first_ids", java.util.Arrays.copyOf(tokens, 8)));

    // 3. chunked PredictStream: mlp_ranker 3 rows, chunk_rows 1 -> 3 messages, final on the last only
    step = "stream chunked";
    Iterator<PredictStreamResponse> chunks =
        inference(channel)
            .predictStream(
                PredictStreamRequest.newBuilder()
                    .setModelName("mlp_ranker")
                    .addInputs(Tensors.fp32("features", new long[] {3, 256}, features(3)))
                    .setChunkRows(1)
                    .build());
    List<Long> sequence = new ArrayList<>();
    List<Boolean> finals = new ArrayList<>();
    List<Float> chunkScores = new ArrayList<>();
    while (chunks.hasNext()) {
      PredictStreamResponse chunk = chunks.next();
      sequence.add(chunk.getSequenceIndex());
      finals.add(chunk.getFinal());
      Tensor s = output(chunk.getOutputsList(), "score");
      require(s.getShapeList().equals(List.of(1L, 1L)), "chunk " + chunk.getSequenceIndex() + " has shape " + s.getShapeList());
      chunkScores.add(Tensors.toFloats(s)[0]);
    }
    require(sequence.equals(List.of(0L, 1L, 2L)) && finals.equals(List.of(false, false, true)), "chunks " + sequence + " final " + finals);
    require(chunkScores.get(0) == scores[0], "the first chunk's score " + chunkScores.get(0) + " differs from the unary " + scores[0]);
    print("stream chunked", Json.obj("messages", sequence.size(), "sequence", sequence, "finals", finals, "score", chunkScores));

    // 4. generative PredictStream: tiny_lm, a raw BYTES prompt (length-prefixed), max_tokens 8, greedy
    step = "stream generative";
    Iterator<PredictStreamResponse> pieces =
        inference(channel)
            .predictStream(
                PredictStreamRequest.newBuilder()
                    .setModelName("tiny_lm")
                    .addInputs(Tensors.strings("prompt", new long[] {1}, "The lighthouse"))
                    .putParameters("max_tokens", Parameter.newBuilder().setInt64Param(8).build())
                    .putParameters("temperature", Parameter.newBuilder().setDoubleParam(0.0).build())
                    .build());
    StringBuilder text = new StringBuilder();
    List<Long> tokenIds = new ArrayList<>();
    int messages = 0;
    boolean finalSeen = false;
    String finishReason = "";
    while (pieces.hasNext()) {
      PredictStreamResponse piece = pieces.next();
      require(!finalSeen, "a message after the final one");
      messages++;
      for (Tensor t : piece.getOutputsList()) {
        if (t.getName().equals("token_ids")) {
          for (long id : Tensors.toLongs(t)) {
            tokenIds.add(id);
          }
        } else if (t.getName().equals("text")) {
          Tensors.toStrings(t).forEach(text::append);
        }
      }
      if (piece.getFinal()) {
        finalSeen = true;
        finishReason = piece.getParametersOrDefault("finish_reason", Parameter.getDefaultInstance()).getStringParam();
      }
    }
    require(finalSeen && !tokenIds.isEmpty() && tokenIds.size() <= 8, "generation ended final=" + finalSeen + " after " + tokenIds.size() + " tokens");
    print("stream generative", Json.obj("model", "tiny_lm", "messages", messages, "tokens", tokenIds.size(), "token_ids", tokenIds, "final", finalSeen, "finish_reason", finishReason, "text", text.toString()));

    // 5. health Check of the server as a whole, and the first message of a Watch on one model
    step = "health check";
    HealthGrpc.HealthBlockingStub health = HealthGrpc.newBlockingStub(channel).withDeadlineAfter(DEADLINE_SECONDS, TimeUnit.SECONDS);
    HealthCheckResponse check = health.check(HealthCheckRequest.newBuilder().setService("").build());
    require(check.getStatus() == HealthCheckResponse.ServingStatus.SERVING, "health Check says " + check.getStatus());
    print("health check", Json.obj("service", "", "status", check.getStatus().name()));

    step = "health watch";
    // Watch streams until cancelled: read its first message inside a cancellable context, then cancel the call
    Context.CancellableContext watching = Context.current().withCancellation();
    HealthCheckResponse first;
    try {
      first =
          watching.call(
              () -> health.watch(HealthCheckRequest.newBuilder().setService("model/mlp_ranker").build()).next());
    } catch (StatusRuntimeException e) {
      throw e;
    } catch (Exception e) {
      throw new Unexpected("health Watch: " + e);
    } finally {
      watching.cancel(null);
    }
    require(first.getStatus() == HealthCheckResponse.ServingStatus.SERVING, "health Watch says " + first.getStatus());
    print("health watch", Json.obj("service", "model/mlp_ranker", "first_status", first.getStatus().name()));

    // 6. an error: an unknown model is NOT_FOUND, with the server's message
    step = "error";
    try {
      inference(channel).predict(PredictRequest.newBuilder().setModelName("no_such_model").build());
      throw new Unexpected("Predict on an unknown model succeeded");
    } catch (StatusRuntimeException e) {
      Status status = e.getStatus();
      require(status.getCode() == Status.Code.NOT_FOUND, "unknown model answered " + status.getCode());
      print("error", Json.obj("code", status.getCode().name(), "code_number", status.getCode().value(), "message", status.getDescription()));
    }
  }

  static void print(String step, String json) {
    System.out.println(step + ": " + json);
  }

  /** Just enough JSON for the printed lines (strings, numbers, booleans, lists and arrays of them). */
  static final class Json {
    private Json() {}

    static String obj(Object... keyValues) {
      StringBuilder s = new StringBuilder("{");
      for (int i = 0; i < keyValues.length; i += 2) {
        if (i > 0) {
          s.append(", ");
        }
        s.append(value(keyValues[i])).append(": ").append(value(keyValues[i + 1]));
      }
      return s.append("}").toString();
    }

    static String value(Object v) {
      if (v == null) {
        return "null";
      }
      if (v instanceof String) {
        return string((String) v);
      }
      if (v instanceof float[]) {
        List<Object> list = new ArrayList<>();
        for (float f : (float[]) v) {
          list.add(f);
        }
        return value(list);
      }
      if (v instanceof long[]) {
        List<Object> list = new ArrayList<>();
        for (long l : (long[]) v) {
          list.add(l);
        }
        return value(list);
      }
      if (v instanceof List) {
        StringBuilder s = new StringBuilder("[");
        for (Object e : (List<?>) v) {
          if (s.length() > 1) {
            s.append(", ");
          }
          s.append(value(e));
        }
        return s.append("]").toString();
      }
      return String.valueOf(v); // numbers (Float.toString round-trips a float) and booleans
    }

    static String string(String v) {
      StringBuilder s = new StringBuilder("\"");
      for (char c : v.toCharArray()) {
        if (c == '"' || c == '\\') {
          s.append('\\').append(c);
        } else if (c < 0x20) {
          s.append(String.format("\\u%04x", (int) c));
        } else {
          s.append(c);
        }
      }
      return s.append('"').toString();
    }
  }
}
