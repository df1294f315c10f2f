// Calling inferd from Node.js: load the inferd.v1 protos at run time with @grpc/proto-loader,
// send a raw little-endian FP32 tensor (the fast path), decode the raw output, and handle a
// gRPC error by its status code.
//
//   npm ci && node predict.js 127.0.0.1:8001
"use strict";

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

function call(client, method, request) {
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) =>
    client[method](request, { deadline }, (err, reply) => (err ? reject(err) : resolve(reply))),
  );
}

async function main() {
  const address = process.argv[2] || "127.0.0.1:8001";
  const limit = 64 * 1024 * 1024;
  const client = new inferd.InferenceService(address, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": limit,
    "grpc.max_send_message_length": limit,
  });

  const models = await call(client, "ListModels", {});
  const names = models.models.map((m) => m.name);

  const rows = 2;
  const features = Array.from({ length: rows * 256 }, (_, i) => (i % 7) / 7);
  const reply = await call(client, "Predict", {
    model_name: "mlp_ranker",
    id: "node-example",
    inputs: [{ name: "features", data_type: "DATA_TYPE_FP32", shape: [rows, 256], raw_contents: rawFloat32(features) }],
  });
  const score = reply.outputs.find((t) => t.name === "score");

  let notFound = null;
  try {
    await call(client, "Predict", { model_name: "no_such_model", inputs: [] });
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
