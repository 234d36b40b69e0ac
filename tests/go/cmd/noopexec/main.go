// noopexec: the smallest Dkron executor, served over go-plugin gRPC with Dkron's handshake as
// Dkron's builtin executors are. It starts nothing: its output is the job config's "command"
// value. With config update=true it first sends that output once through the host's StatusHelper
// (the GRPCBroker callback every streaming executor uses), so a host's callback path is exercised.
package main

import (
	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"
	"github.com/hashicorp/go-plugin"
)

type echoCommand struct{}

func (echoCommand) Execute(req *types.ExecuteRequest, status dkplugin.StatusHelper) (*types.ExecuteResponse, error) {
	output := []byte(req.Config["command"])
	if req.Config["update"] == "true" {
		if _, err := status.Update(output, false); err != nil {
			return nil, err
		}
	}
	return &types.ExecuteResponse{Output: output}, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: dkplugin.Handshake,
		Plugins:         map[string]plugin.Plugin{dkplugin.ExecutorPluginName: &dkplugin.ExecutorPlugin{Executor: echoCommand{}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
