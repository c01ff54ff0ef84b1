// Package bulwarkgrpc brings bulwark to gRPC.
package bulwarkgrpc
