// dkron-executor-gotest: a Dkron executor served the way Dkron v4.0.5 serves its executors
// (go-plugin gRPC, service types.Executor), for dkron_exec's tests. See internal/gotestexec.
package main

import (
	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/hashicorp/go-plugin"

	"dkronexec/testplugins/internal/gotestexec"
)

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: dkplugin.Handshake,
		Plugins:         map[string]plugin.Plugin{"executor": &dkplugin.ExecutorPlugin{Executor: gotestexec.Exec{}}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
