// Calling inferd from C++ with stubs generated from protos/ (Debian's grpc++): unary Predict with a raw
// and a typed tensor, a chunked and a generative PredictStream, grpc.health.v1 Check and Watch, and an error
// with its status code. One line per call on stdout; exit status 1 when any answer is not what it should be.
//
//   make clients-cpp && .cache/clients/cpp/example 127.0.0.1:8001
//
// A token comes from INFERD_TOKEN (sent as "authorization: Bearer <token>"); INFERD_TLS_CA switches to TLS
// (with INFERD_TLS_CERT + INFERD_TLS_KEY for mTLS, INFERD_TLS_SERVER_NAME when the address is not a name in
// the server's certificate), as for the other examples (docs/security.md, "Clients").
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "grpc/health/v1/health.grpc.pb.h"
#include "inferd/v1/inference.grpc.pb.h"
#include "tensors.h"

namespace {

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;
using inferd::v1::InferenceService;

constexpr int kDeadlineSeconds = 10;
constexpr int kMessageLimit = 64 * 1024 * 1024;  // inferd's limit; gRPC clients default to 4 MiB
int failures = 0;

void Fail(const std::string& what) {
  std::fprintf(stderr, "FAIL %s\n", what.c_str());
  ++failures;
}

const char* CodeName(grpc::StatusCode code) {
  static const char* const names[] = {"OK",
                                      "CANCELLED",
                                      "UNKNOWN",
                                      "INVALID_ARGUMENT",
                                      "DEADLINE_EXCEEDED",
                                      "NOT_FOUND",
                                      "ALREADY_EXISTS",
                                      "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED",
                                      "FAILED_PRECONDITION",
                                      "ABORTED",
                                      "OUT_OF_RANGE",
                                      "UNIMPLEMENTED",
                                      "INTERNAL",
                                      "UNAVAILABLE",
                                      "DATA_LOSS",
                                      "UNAUTHENTICATED"};
  const int index = static_cast<int>(code);
  return index >= 0 && index <= 16 ? names[index] : "?";
}

std::string Describe(const grpc::Status& status) {
  return std::string(CodeName(status.error_code())) + " (" + std::to_string(status.error_code()) +
         "): " + status.error_message();
}

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::shared_ptr<grpc::Channel> Connect(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMessageLimit);
  args.SetMaxSendMessageSize(kMessageLimit);
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!Env("INFERD_TLS_CA").empty()) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = ReadFile(Env("INFERD_TLS_CA"));
    if (!Env("INFERD_TLS_CERT").empty()) {
      tls.pem_cert_chain = ReadFile(Env("INFERD_TLS_CERT"));
      tls.pem_private_key = ReadFile(Env("INFERD_TLS_KEY"));
    }
    if (!Env("INFERD_TLS_SERVER_NAME").empty()) args.SetSslTargetNameOverride(Env("INFERD_TLS_SERVER_NAME"));
    credentials = grpc::SslCredentials(tls);
  }
  return grpc::CreateCustomChannel(address, credentials, args);
}

// Every call: a deadline (the server drops work whose deadline has passed) and the token, if any.
void Prepare(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(kDeadlineSeconds));
  const std::string token = Env("INFERD_TOKEN");
  if (!token.empty()) context->AddMetadata("authorization", "Bearer " + token);
}

std::vector<float> Features(int rows) {
  std::vector<float> values(static_cast<size_t>(rows) * 256);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 7) / 7.0f;
  return values;
}

std::string Join(const std::vector<int64_t>& values, size_t limit = SIZE_MAX) {
  std::string out;
  for (size_t i = 0; i < values.size() && i < limit; ++i) out += (i ? "," : "") + std::to_string(values[i]);
  return out;
}

std::string JoinFloats(const std::vector<float>& values) {
  std::string out;
  char buffer[32];
  for (size_t i = 0; i < values.size(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%s%.9g", i ? "," : "", static_cast<double>(values[i]));
    out += buffer;
  }
  return out;
}

// A printable rendering of generated text: C-style escapes for quotes, backslashes and control bytes.
std::string Quote(const std::string& text) {
  std::string out = "\"";
  char buffer[8];
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      std::snprintf(buffer, sizeof buffer, "\\x%02x", c);
      out += buffer;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

const inferd::v1::Tensor* Output(const google::protobuf::RepeatedPtrField<inferd::v1::Tensor>& outputs,
                                 const std::string& name) {
  for (const auto& tensor : outputs) {
    if (tensor.name() == name) return &tensor;
  }
  return nullptr;
}

// Unary Predict, raw: mlp_ranker's features FP32 [1, 256] as little-endian bytes; the score comes back raw.
void PredictRaw(InferenceService::Stub& stub) {
  inferd::v1::PredictRequest request;
  request.set_model_name("mlp_ranker");
  request.set_id("cpp-example");
  *request.add_inputs() = inferd::RawFp32("features", {1, 256}, Features(1));
  inferd::v1::PredictResponse reply;
  grpc::ClientContext context;
  Prepare(&context);
  const grpc::Status status = stub.Predict(&context, request, &reply);
  if (!status.ok()) return Fail("predict_raw: " + Describe(status));
  const inferd::v1::Tensor* score = Output(reply.outputs(), "score");
  if (score == nullptr || score->raw_contents().empty()) return Fail("predict_raw: no raw 'score' output");
  const std::vector<float> values = inferd::Fp32Values(*score);
  std::printf("predict_raw model=%s version=%lld id=%s shape=[%s] score=%s\n", reply.model_name().c_str(),
              static_cast<long long>(reply.model_version()), reply.id().c_str(),
              Join(inferd::ShapeOf(*score)).c_str(), JoinFloats(values).c_str());
  if (reply.id() != "cpp-example" || inferd::ShapeOf(*score) != std::vector<int64_t>{1, 1} ||
      !std::isfinite(values[0])) {
    Fail("predict_raw: unexpected reply");
  }
}

// Unary Predict, typed: the tokenizer's text BYTES [2] in bytes_contents; every input typed, so the output
// comes back typed too (int64_contents).
void PredictTyped(InferenceService::Stub& stub) {
  inferd::v1::PredictRequest request;
  request.set_model_name("tokenizer");
  *request.add_inputs() = inferd::TypedBytes("text", {2}, {"hi", "abc"});
  inferd::v1::PredictResponse reply;
  grpc::ClientContext context;
  Prepare(&context);
  const grpc::Status status = stub.Predict(&context, request, &reply);
  if (!status.ok()) return Fail("predict_typed: " + Describe(status));
  const inferd::v1::Tensor* ids = Output(reply.outputs(), "input_ids");
  if (ids == nullptr || !ids->raw_contents().empty()) return Fail("predict_typed: no typed 'input_ids' output");
  if (inferd::ShapeOf(*ids) != std::vector<int64_t>{2, 128}) return Fail("predict_typed: 'input_ids' is not [2, 128]");
  const std::vector<int64_t> values = inferd::Int64Values(*ids);
  const std::vector<int64_t> row0(values.begin(), values.begin() + 5);
  const std::vector<int64_t> row1(values.begin() + 128, values.begin() + 133);
  std::printf("predict_typed model=%s shape=[%s] field=int64_contents row0=%s row1=%s\n", reply.model_name().c_str(),
              Join(inferd::ShapeOf(*ids)).c_str(), Join(row0).c_str(), Join(row1).c_str());
  // ids: 1 = BOS, then byte + 2, then 0 padding
  if (row0 != std::vector<int64_t>{1, 'h' + 2, 'i' + 2, 0, 0} ||
      row1 != std::vector<int64_t>{1, 'a' + 2, 'b' + 2, 'c' + 2, 0}) {
    Fail("predict_typed: unexpected ids");
  }
}

// PredictStream, chunked: 3 rows of mlp_ranker with chunk_rows 1 -> 3 messages, final only on the last.
void StreamChunked(InferenceService::Stub& stub) {
  constexpr int rows = 3;
  inferd::v1::PredictStreamRequest request;
  request.set_model_name("mlp_ranker");
  request.set_chunk_rows(1);
  *request.add_inputs() = inferd::RawFp32("features", {rows, 256}, Features(rows));
  grpc::ClientContext context;
  Prepare(&context);
  std::unique_ptr<grpc::ClientReader<inferd::v1::PredictStreamResponse>> reader = stub.PredictStream(&context, request);
  inferd::v1::PredictStreamResponse message;
  std::vector<int64_t> sequence, chunk_rows;
  std::vector<float> scores;
  int finals = 0;
  bool final_last = false;
  while (reader->Read(&message)) {
    sequence.push_back(message.sequence_index());
    const inferd::v1::Tensor* score = Output(message.outputs(), "score");
    if (score == nullptr) return Fail("stream_chunked: a message without 'score'");
    chunk_rows.push_back(score->shape_size() > 0 ? score->shape(0) : -1);
    for (float value : inferd::Fp32Values(*score)) scores.push_back(value);
    finals += message.final() ? 1 : 0;
    final_last = message.final();
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail("stream_chunked: " + Describe(status));
  std::printf("stream_chunked messages=%zu sequence=%s rows=%s final_count=%d final_last=%s scores=%s\n",
              sequence.size(), Join(sequence).c_str(), Join(chunk_rows).c_str(), finals,
              final_last ? "true" : "false", JoinFloats(scores).c_str());
  if (sequence != std::vector<int64_t>{0, 1, 2} || chunk_rows != std::vector<int64_t>{1, 1, 1} || finals != 1 ||
      !final_last) {
    Fail("stream_chunked: unexpected messages");
  }
}

// PredictStream, generative: tiny_lm's prompt as raw BYTES [1] (4-byte little-endian length + UTF-8),
// max_tokens 8 and temperature 0 (greedy), messages until the one with final = true.
void StreamGenerate(InferenceService::Stub& stub) {
  constexpr int64_t max_tokens = 8;
  inferd::v1::PredictStreamRequest request;
  request.set_model_name("tiny_lm");
  *request.add_inputs() = inferd::RawBytes("prompt", {1}, {"The lighthouse"});
  (*request.mutable_parameters())["max_tokens"].set_int64_param(max_tokens);
  (*request.mutable_parameters())["temperature"].set_double_param(0.0);
  grpc::ClientContext context;
  Prepare(&context);
  std::unique_ptr<grpc::ClientReader<inferd::v1::PredictStreamResponse>> reader = stub.PredictStream(&context, request);
  inferd::v1::PredictStreamResponse message;
  std::vector<int64_t> tokens;
  std::string text, finish_reason;
  int messages = 0, finals = 0;
  bool final_last = false;
  int64_t generated = -1;
  while (reader->Read(&message)) {
    ++messages;
    if (const inferd::v1::Tensor* ids = Output(message.outputs(), "token_ids")) {
      for (int64_t id : inferd::Int64Values(*ids)) tokens.push_back(id);
    }
    if (const inferd::v1::Tensor* piece = Output(message.outputs(), "text")) {
      for (const std::string& s : inferd::BytesValues(*piece)) text += s;
    }
    finals += message.final() ? 1 : 0;
    final_last = message.final();
    if (message.final()) {
      const auto& parameters = message.parameters();
      if (parameters.count("finish_reason")) finish_reason = parameters.at("finish_reason").string_param();
      if (parameters.count("generated_tokens")) generated = parameters.at("generated_tokens").int64_param();
    }
  }
  const grpc::Status status = reader->Finish();
  if (!status.ok()) return Fail("stream_generate: " + Describe(status));
  std::printf("stream_generate model=tiny_lm messages=%d tokens=%zu final_count=%d final_last=%s finish_reason=%s "
              "generated_tokens=%lld token_ids=%s text=%s\n",
              messages, tokens.size(), finals, final_last ? "true" : "false", finish_reason.c_str(),
              static_cast<long long>(generated), Join(tokens).c_str(), Quote(text).c_str());
  if (tokens.empty() || static_cast<int64_t>(tokens.size()) > max_tokens || finals != 1 || !final_last ||
      finish_reason.empty()) {
    Fail("stream_generate: unexpected messages");
  }
}

const char* StatusName(HealthCheckResponse::ServingStatus status) {
  return HealthCheckResponse::ServingStatus_Name(status).c_str();
}

// grpc.health.v1, generated from protos/grpc/health/v1/health.proto: Check "" and Watch the first message.
void HealthCheckAndWatch(const std::shared_ptr<grpc::Channel>& channel) {
  std::unique_ptr<Health::Stub> health = Health::NewStub(channel);
  HealthCheckRequest request;
  request.set_service("");
  HealthCheckResponse reply;
  grpc::ClientContext context;
  Prepare(&context);
  const grpc::Status status = health->Check(&context, request, &reply);
  if (!status.ok()) {
    Fail("health_check: " + Describe(status));
  } else {
    std::printf("health_check service=\"\" status=%s\n", StatusName(reply.status()));
    if (reply.status() != HealthCheckResponse::SERVING) Fail("health_check: not SERVING");
  }

  HealthCheckRequest watch_request;
  watch_request.set_service("model/mlp_ranker");
  grpc::ClientContext watch_context;
  Prepare(&watch_context);
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> watch = health->Watch(&watch_context, watch_request);
  HealthCheckResponse first;
  if (!watch->Read(&first)) {
    Fail("health_watch: " + Describe(watch->Finish()));
    return;
  }
  std::printf("health_watch service=model/mlp_ranker first=%s\n", StatusName(first.status()));
  if (first.status() != HealthCheckResponse::SERVING) Fail("health_watch: not SERVING");
  watch_context.TryCancel();  // a Watch runs until the caller ends it
  const grpc::Status ended = watch->Finish();
  if (ended.error_code() != grpc::StatusCode::CANCELLED) Fail("health_watch: ended with " + Describe(ended));
}

// An error arrives as a gRPC status: an unknown model is NOT_FOUND with the server's message.
void UnknownModel(InferenceService::Stub& stub) {
  inferd::v1::PredictRequest request;
  request.set_model_name("no_such_model");
  inferd::v1::PredictResponse reply;
  grpc::ClientContext context;
  Prepare(&context);
  const grpc::Status status = stub.Predict(&context, request, &reply);
  std::printf("error code=%s (%d) message=%s\n", CodeName(status.error_code()), status.error_code(),
              Quote(status.error_message()).c_str());
  if (status.error_code() != grpc::StatusCode::NOT_FOUND) Fail("error: expected NOT_FOUND");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string address = argc > 1 ? argv[1] : "127.0.0.1:8001";
  try {
    const std::shared_ptr<grpc::Channel> channel = Connect(address);
    std::unique_ptr<InferenceService::Stub> stub = InferenceService::NewStub(channel);
    PredictRaw(*stub);
    PredictTyped(*stub);
    StreamChunked(*stub);
    StreamGenerate(*stub);
    HealthCheckAndWatch(channel);
    UnknownModel(*stub);
  } catch (const std::exception& error) {
    Fail(std::string("exception: ") + error.what());
  }
  if (failures != 0) {
    std::fprintf(stderr, "%d unexpected result(s)\n", failures);
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
