// dkron-executor-gotestv1: the same test executor under the service names Dkron v4.0.9 renamed
// them to (types.v1.ExecutorService/Execute, and the host's types.v1.StatusHelperService/Update).
// The messages did not change, so v4.0.5's are used; only the names on the wire differ.
package main

import (
	"context"
	"errors"

	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"dkronexec/testplugins/internal/gotestexec"
)

type v1Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl dkplugin.Executor
}

func (p *v1Plugin) GRPCServer(broker *plugin.GRPCBroker, s *grpc.Server) error {
	execute := func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		req := new(types.ExecuteRequest)
		if err := dec(req); err != nil {
			return nil, err
		}
		conn, err := broker.Dial(req.StatusServer)
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		return p.impl.Execute(req, v1Helper{conn})
	}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "types.v1.ExecutorService",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Execute", Handler: execute}},
	}, p)
	return nil
}

func (p *v1Plugin) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, errors.New("server only")
}

type v1Helper struct{ conn *grpc.ClientConn }

func (h v1Helper) Update(b []byte, stderr bool) (int64, error) {
	resp := new(types.StatusUpdateResponse)
	err := h.conn.Invoke(context.Background(), "/types.v1.StatusHelperService/Update", &types.StatusUpdateRequest{Output: b, Error: stderr}, resp)
	return resp.R, err
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: dkplugin.Handshake,
		Plugins:         map[string]plugin.Plugin{"executor": &v1Plugin{impl: gotestexec.Exec{}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
