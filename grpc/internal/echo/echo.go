// Package echo is a tiny gRPC service for the tests and benchmarks of
// bulwarkgrpc, written by hand with a grpc.ServiceDesc over the well-known
// wrapper types, so that it needs no protoc: every method takes and returns a
// google.protobuf.StringValue.
package echo

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Service is the service's full name.
const Service = "bulwark.echo.Echo"

// The full method names.
const (
	// Get is a read: safe and idempotent.
	Get = "/" + Service + "/Get"
	// Create has an effect: idempotent only under an idempotency key.
	Create = "/" + Service + "/Create"
	// List streams answers back (server streaming).
	List = "/" + Service + "/List"
)

// Handler answers a unary call to method.
type Handler func(ctx context.Context, method string, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error)

// StreamHandler answers a server-streaming call: it sends with send.
type StreamHandler func(ctx context.Context, in *wrapperspb.StringValue, send func(*wrapperspb.StringValue) error) error

// Register registers the service on s, answered by h and sh (sh may be nil).
func Register(s *grpc.Server, h Handler, sh StreamHandler) {
	s.RegisterService(desc(h, sh), nil)
}

func unary(h Handler, method string) grpc.MethodHandler {
	return func(_ any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
		in := new(wrapperspb.StringValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		if icpt == nil {
			return h(ctx, method, in)
		}
		info := &grpc.UnaryServerInfo{FullMethod: method}
		return icpt(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return h(ctx, method, req.(*wrapperspb.StringValue))
		})
	}
}

func desc(h Handler, sh StreamHandler) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: Service,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			{MethodName: "Get", Handler: unary(h, Get)},
			{MethodName: "Create", Handler: unary(h, Create)},
		},
		Streams: []grpc.StreamDesc{{
			StreamName:    "List",
			ServerStreams: true,
			Handler: func(_ any, stream grpc.ServerStream) error {
				in := new(wrapperspb.StringValue)
				if err := stream.RecvMsg(in); err != nil {
					return err
				}
				if sh == nil {
					return nil
				}
				return sh(stream.Context(), in, func(m *wrapperspb.StringValue) error { return stream.SendMsg(m) })
			},
		}},
	}
}

// Call makes a unary call of method with in and returns the answer's value.
func Call(ctx context.Context, cc grpc.ClientConnInterface, method, in string, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, method, wrapperspb.String(in), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// ListStream is the description of List for ClientConn.NewStream.
var ListStream = &grpc.StreamDesc{StreamName: "List", ServerStreams: true}
