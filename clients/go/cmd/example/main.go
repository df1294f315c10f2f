// Command example calls inferd from Go with stubs generated from protos/ (clients/go/README.md):
// unary Predict with a raw and with a typed tensor, a chunked PredictStream, a generative
// PredictStream, health Check and Watch, and an error with its status code and message. It prints one
// line per call, "<what>: <JSON>", and exits non-zero on anything unexpected.
//
//	example [ADDRESS]   (default 127.0.0.1:8001; the example models: make examples && make run)
//
// TLS and a token come from the environment (docs/security.md, "Clients"): INFERD_TLS_CA (the CA bundle the
// server's certificate chains to; set = TLS, unset = plaintext), INFERD_TLS_CERT + INFERD_TLS_KEY (a client
// certificate for mTLS), INFERD_TLS_SERVER_NAME (the name to check when it differs from the address),
// INFERD_TOKEN (sent as "authorization: Bearer <token>" on every call).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/inferd/inferd/clients/go/inferd"
	inferdv1 "github.com/inferd/inferd/clients/go/inferdv1"
)

const features = 256

func main() {
	address := "127.0.0.1:8001"
	if len(os.Args) > 1 {
		address = os.Args[1]
	}
	if err := run(address); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL", err)
		os.Exit(1)
	}
}

// failure is a step's error: "<what>: <CODE> <message>" for a gRPC status, else the error's text.
func failure(what string, err error) error {
	var grpcError interface{ GRPCStatus() *status.Status }
	if errors.As(err, &grpcError) {
		st := grpcError.GRPCStatus()
		return fmt.Errorf("%s: %s %s", what, codeName(st.Code()), st.Message())
	}
	return fmt.Errorf("%s: %w", what, err)
}

func run(address string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	limit := 64 << 20
	// Plaintext unless INFERD_TLS_CA is set; the dial itself does not wait: the first call fails UNAVAILABLE
	// when nothing answers (or the TLS handshake fails).
	options, err := dialOptions()
	if err != nil {
		return err
	}
	options = append(options,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(limit), grpc.MaxCallSendMsgSize(limit)))
	conn, err := grpc.DialContext(ctx, address, options...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", address, err)
	}
	defer conn.Close()
	client := inferdv1.NewInferenceServiceClient(conn)
	health := healthpb.NewHealthClient(conn)

	var scores []float32
	steps := []struct {
		what string
		call func() (any, error)
	}{
		{"predict raw", func() (line any, err error) { scores, line, err = predictRaw(ctx, client); return }},
		{"predict typed", func() (any, error) { return predictTyped(ctx, client) }},
		{"stream chunked", func() (any, error) { return streamChunked(ctx, client, scores) }},
		{"stream generative", func() (any, error) { return streamGenerative(ctx, client) }},
		{"health check", func() (any, error) { return healthCheck(ctx, health) }},
		{"health watch", func() (any, error) { return healthWatch(ctx, health) }},
		{"error", func() (any, error) { return unknownModel(ctx, client) }},
	}
	for _, step := range steps {
		line, err := step.call()
		if err != nil {
			return failure(step.what, err)
		}
		if err := printLine(step.what, line); err != nil {
			return err
		}
	}
	return nil
}

// dialOptions: the transport (TLS or mTLS from INFERD_TLS_*, else plaintext) and INFERD_TOKEN as a bearer
// token on every call.
func dialOptions() ([]grpc.DialOption, error) {
	var options []grpc.DialOption
	if caFile := os.Getenv("INFERD_TLS_CA"); caFile != "" {
		ca, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("INFERD_TLS_CA: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(ca) {
			return nil, fmt.Errorf("INFERD_TLS_CA: no PEM certificate in %s", caFile)
		}
		config := &tls.Config{RootCAs: roots, ServerName: os.Getenv("INFERD_TLS_SERVER_NAME")}
		if certFile := os.Getenv("INFERD_TLS_CERT"); certFile != "" {
			certificate, err := tls.LoadX509KeyPair(certFile, os.Getenv("INFERD_TLS_KEY"))
			if err != nil {
				return nil, fmt.Errorf("INFERD_TLS_CERT/INFERD_TLS_KEY: %w", err)
			}
			config.Certificates = []tls.Certificate{certificate}
		}
		options = append(options, grpc.WithTransportCredentials(credentials.NewTLS(config)))
	} else {
		options = append(options, grpc.WithInsecure())
	}
	if token := os.Getenv("INFERD_TOKEN"); token != "" {
		options = append(options, grpc.WithPerRPCCredentials(bearerToken(token)))
	}
	return options, nil
}

// bearerToken is a per-RPC credential: "authorization: Bearer <token>" on every call, over TLS or plaintext.
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

func printLine(what string, value any) error {
	encoded, err := json.Marshal(value)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %s\n", what, encoded)
	return nil
}

// featureRows is rows × 256 FP32 features, (i mod 7) / 7 — the Node.js example's input.
func featureRows(rows int) []float32 {
	values := make([]float32, rows*features)
	for i := range values {
		values[i] = float32(i%7) / 7
	}
	return values
}

// predictRaw: mlp_ranker, features FP32 [2, 256] in raw_contents, the score read back from raw bytes.
func predictRaw(ctx context.Context, client inferdv1.InferenceServiceClient) ([]float32, any, error) {
	const rows = 2
	reply, err := client.Predict(ctx, &inferdv1.PredictRequest{
		ModelName:      "mlp_ranker",
		Id:             "go-example",
		Inputs:         []*inferdv1.Tensor{inferd.RawFP32("features", []int64{rows, features}, featureRows(rows))},
		OutputEncoding: inferdv1.TensorEncoding_TENSOR_ENCODING_RAW,
	})
	if err != nil {
		return nil, nil, err
	}
	score := inferd.Output(reply.Outputs, "score")
	values, err := inferd.FP32Values(score)
	if err != nil {
		return nil, nil, err
	}
	if len(score.RawContents) == 0 || !equalShape(score.Shape, rows, 1) || reply.Id != "go-example" {
		return nil, nil, fmt.Errorf("unexpected reply: id %q, score %v", reply.Id, score)
	}
	for _, v := range values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, nil, fmt.Errorf("score %v is not finite", values)
		}
	}
	return values, map[string]any{
		"model": reply.ModelName, "version": reply.ModelVersion, "id": reply.Id,
		"data_type": score.DataType.String(), "shape": score.Shape, "score": values,
	}, nil
}

// predictTyped: tokenizer, text BYTES in bytes_contents, so the ids come back typed (int64_contents).
func predictTyped(ctx context.Context, client inferdv1.InferenceServiceClient) (any, error) {
	reply, err := client.Predict(ctx, &inferdv1.PredictRequest{
		ModelName: "tokenizer",
		Inputs:    []*inferdv1.Tensor{inferd.TypedBytes("text", []int64{1}, [][]byte{[]byte("hi")})},
	})
	if err != nil {
		return nil, err
	}
	ids := inferd.Output(reply.Outputs, "input_ids")
	values, err := inferd.Int64Values(ids)
	if err != nil {
		return nil, err
	}
	// BOS = 1, then each byte + 2, then padding 0
	if len(ids.RawContents) != 0 || !equalShape(ids.Shape, 1, 128) || values[0] != 1 || values[1] != 'h'+2 || values[2] != 'i'+2 || values[3] != 0 {
		return nil, fmt.Errorf("unexpected input_ids %v (raw %d bytes)", ids.Shape, len(ids.RawContents))
	}
	return map[string]any{
		"model": reply.ModelName, "version": reply.ModelVersion, "data_type": ids.DataType.String(),
		"shape": ids.Shape, "typed": true, "first_ids": values[:4],
	}, nil
}

// streamChunked: mlp_ranker over 3 rows with chunk_rows 1 — one message per row, final on the last,
// and the same scores as the unary Predict for the rows they share.
func streamChunked(ctx context.Context, client inferdv1.InferenceServiceClient, unary []float32) (any, error) {
	const rows = 3
	stream, err := client.PredictStream(ctx, &inferdv1.PredictStreamRequest{
		ModelName:      "mlp_ranker",
		Inputs:         []*inferdv1.Tensor{inferd.RawFP32("features", []int64{rows, features}, featureRows(rows))},
		OutputEncoding: inferdv1.TensorEncoding_TENSOR_ENCODING_RAW,
		ChunkRows:      1,
	})
	if err != nil {
		return nil, err
	}
	var scores []float32
	finals := []bool{}
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if message.SequenceIndex != int64(len(finals)) {
			return nil, fmt.Errorf("message %d has sequence_index %d", len(finals), message.SequenceIndex)
		}
		score := inferd.Output(message.Outputs, "score")
		values, err := inferd.FP32Values(score)
		if err != nil {
			return nil, err
		}
		if !equalShape(score.Shape, 1, 1) {
			return nil, fmt.Errorf("chunk %d has shape %v", message.SequenceIndex, score.Shape)
		}
		scores = append(scores, values...)
		finals = append(finals, message.Final)
	}
	if len(finals) != rows || !onlyLastFinal(finals) {
		return nil, fmt.Errorf("%d messages, final flags %v", len(finals), finals)
	}
	for i, u := range unary {
		if math.Abs(float64(scores[i]-u)) > 1e-5 {
			return nil, fmt.Errorf("streamed score %v differs from unary %v", scores, unary)
		}
	}
	return map[string]any{"model": "mlp_ranker", "messages": len(finals), "finals": finals, "score": scores}, nil
}

// streamGenerative: tiny_lm, prompt BYTES [1] raw (4-byte length prefix), max_tokens 8, greedy;
// tokens until the final message, which carries finish_reason.
func streamGenerative(ctx context.Context, client inferdv1.InferenceServiceClient) (any, error) {
	const maxTokens = 8
	stream, err := client.PredictStream(ctx, &inferdv1.PredictStreamRequest{
		ModelName: "tiny_lm",
		Inputs:    []*inferdv1.Tensor{inferd.RawStrings("prompt", []int64{1}, []string{"The "})},
		Parameters: map[string]*inferdv1.Parameter{
			"max_tokens":  {Value: &inferdv1.Parameter_Int64Param{Int64Param: maxTokens}},
			"temperature": {Value: &inferdv1.Parameter_DoubleParam{DoubleParam: 0}},
		},
		OutputEncoding: inferdv1.TensorEncoding_TENSOR_ENCODING_RAW,
	})
	if err != nil {
		return nil, err
	}
	var tokens []int64
	var text strings.Builder
	finals := []bool{}
	finish := ""
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if message.SequenceIndex != int64(len(finals)) {
			return nil, fmt.Errorf("message %d has sequence_index %d", len(finals), message.SequenceIndex)
		}
		ids, err := inferd.Int64Values(inferd.Output(message.Outputs, "token_ids"))
		if err != nil {
			return nil, err
		}
		pieces, err := inferd.BytesValues(inferd.Output(message.Outputs, "text"))
		if err != nil {
			return nil, err
		}
		tokens = append(tokens, ids...)
		for _, piece := range pieces {
			text.Write(piece)
		}
		finals = append(finals, message.Final)
		if message.Final {
			finish = message.Parameters["finish_reason"].GetStringParam()
		}
	}
	if len(finals) == 0 || !onlyLastFinal(finals) {
		return nil, fmt.Errorf("final flags %v", finals)
	}
	if len(tokens) == 0 || len(tokens) > maxTokens || (finish == "length" && len(tokens) != maxTokens) || finish == "" {
		return nil, fmt.Errorf("%d tokens, finish_reason %q", len(tokens), finish)
	}
	return map[string]any{
		"model": "tiny_lm", "messages": len(finals), "tokens": len(tokens), "token_ids": tokens, "text": text.String(),
		"finish_reason": finish, "final": finals[len(finals)-1],
	}, nil
}

func healthCheck(ctx context.Context, health healthpb.HealthClient) (any, error) {
	reply, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "inferd.v1.InferenceService"})
	if err != nil {
		return nil, err
	}
	if reply.Status != healthpb.HealthCheckResponse_SERVING {
		return nil, fmt.Errorf("status %v", reply.Status)
	}
	return map[string]any{"service": "inferd.v1.InferenceService", "status": reply.Status.String()}, nil
}

// healthWatch reads the first message of a Watch (the current status), then cancels the call.
func healthWatch(ctx context.Context, health healthpb.HealthClient) (any, error) {
	watchCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	service := "model/mlp_ranker"
	stream, err := health.Watch(watchCtx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return nil, err
	}
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if first.Status != healthpb.HealthCheckResponse_SERVING {
		return nil, fmt.Errorf("first status %v", first.Status)
	}
	return map[string]any{"service": service, "first_status": first.Status.String()}, nil
}

// unknownModel: Predict on a model the server does not hold is NOT_FOUND, with a message saying so.
func unknownModel(ctx context.Context, client inferdv1.InferenceServiceClient) (any, error) {
	_, err := client.Predict(ctx, &inferdv1.PredictRequest{ModelName: "no_such_model"})
	if err == nil {
		return nil, fmt.Errorf("Predict on no_such_model succeeded")
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound || !strings.Contains(st.Message(), "not found") {
		return nil, fmt.Errorf("want NOT_FOUND, got %v", err)
	}
	return map[string]any{"code": codeName(st.Code()), "code_number": int(st.Code()), "message": st.Message()}, nil
}

// codeName is the canonical name of a status code (NOT_FOUND), as other languages print it.
func codeName(code codes.Code) string {
	var name strings.Builder
	previous := 'A'
	for _, r := range code.String() { // "NotFound", "OK"
		if r >= 'A' && r <= 'Z' && previous >= 'a' && previous <= 'z' {
			name.WriteByte('_')
		}
		name.WriteRune(r)
		previous = r
	}
	return strings.ToUpper(name.String())
}

func equalShape(shape []int64, dims ...int64) bool {
	if len(shape) != len(dims) {
		return false
	}
	for i := range dims {
		if shape[i] != dims[i] {
			return false
		}
	}
	return true
}

func onlyLastFinal(finals []bool) bool {
	for i, final := range finals {
		if final != (i == len(finals)-1) {
			return false
		}
	}
	return true
}
