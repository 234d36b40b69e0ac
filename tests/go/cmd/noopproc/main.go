// noopproc: the smallest Dkron processor, for the Go baseline of dkron_exec's benches and for the
// tests. It hands the execution back as it came, served by Dkron's own plugin.Serve (go-plugin,
// net/rpc + gob over yamux), so what a call costs is the plugin stack alone.
package main

import (
	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"

	"dkronexec/testplugins/internal/execution"
)

type unchanged struct{}

func (unchanged) Process(args *dkplugin.ProcessorArgs) types.Execution {
	return execution.Returned(&args.Execution)
}

func main() { dkplugin.Serve(&dkplugin.ServeOpts{Processor: unchanged{}}) }
