// Calling inferd from Node.js: load the inferd.v1 protos at run time with @grpc/proto-loader,
// send a raw little-endian FP32 tensor (the fast path), decode the raw output, and handle a
// gRPC error by its status code.
//
//   npm ci && node predict.js 127.0.0.1:8001
//
// TLS and a token come from the environment (docs/security.md, "Clients"): INFERD_TLS_CA (the CA bundle the
// server's certificate chains to; set = TLS), INFERD_TLS_CERT + INFERD_TLS_KEY (a client certificate for
// mTLS), INFERD_TLS_SERVER_NAME (the name to check when it differs from the address), INFERD_TOKEN (sent as
// "authorization: Bearer <token>" on every call).
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.join(__dirname, "..", "..", "protos");
const definition = protoLoader.loadSync(path.join(PROTOS, "inferd/v1/inference.proto"), {
  includeDirs: [PROTOS],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
});
const inferd = grpc.loadPackageDefinition(definition).inferd.v1;

function rawFloat32(values) {
  const array = Float32Array.from(values);
  return Buffer.from(array.buffer, array.byteOffset, array.byteLength);
}

function decodeFloat32(tensor) {
  const raw = tensor.raw_contents;
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  return Array.from(new Float32Array(copy.buffer));
}

// Channel credentials from INFERD_TLS_*: plaintext when no CA is named.
function channelCredentials(env) {
  if (!env.INFERD_TLS_CA) {
    return grpc.credentials.createInsecure();
  }
  const read = (name) => (env[name] ? fs.readFileSync(env[name]) : null);
  return grpc.credentials.createSsl(read("INFERD_TLS_CA"), read("INFERD_TLS_KEY"), read("INFERD_TLS_CERT"));
}

// Per-call metadata: the bearer token, if any (metadata works over plaintext too, unlike call credentials).
function callMetadata(env) {
  const metadata = new grpc.Metadata();
  if (env.INFERD_TOKEN) {
    metadata.set("authorization", `Bearer ${env.INFERD_TOKEN}`);
  }
  return metadata;
}

function call(client, method, request, metadata) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) =>
    client[method](request, metadata, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply))),
  );
}

async function main() {
  const address = process.argv[2] || "127.0.0.1:8001";
  const limit = 64 * 1024 * 1024;
  const options = { "grpc.max_receive_message_length": limit, "grpc.max_send_message_length": limit };
  if (process.env.INFERD_TLS_SERVER_NAME) {
    options["grpc.ssl_target_name_override"] = process.env.INFERD_TLS_SERVER_NAME;
  }
  const client = new inferd.InferenceService(address, channelCredentials(process.env), options);
  const metadata = callMetadata(process.env);

  const models = await call(client, "ListModels", {}, metadata);
  const names = models.models.map((m) => m.name);

  const rows = 2;
  const features = Array.from({ length: rows * 256 }, (_, i) => (i % 7) / 7);
  const reply = await call(
    client,
    "Predict",
    {
      model_name: "mlp_ranker",
      id: "node-example",
      inputs: [{ name: "features", data_type: "DATA_TYPE_FP32", shape: [rows, 256], raw_contents: rawFloat32(features) }],
    },
    metadata,
  );
  const score = reply.outputs.find((t) => t.name === "score");

  let notFound = null;
  try {
    await call(client, "Predict", { model_name: "no_such_model", inputs: [] }, metadata);
  } catch (err) {
    notFound = { code: grpc.status[err.code], details: err.details };
  }

  console.log(
    JSON.stringify({
      models: names,
      model: reply.model_name,
      version: reply.model_version,
      id: reply.id,
      score: { shape: score.shape, data_type: score.data_type, values: decodeFloat32(score) },
      not_found: notFound,
    }),
  );
  client.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
