// dkron-processor-myplugin: the seed's processor example ("Developing a Plugin"), completed.
// It is served with Dkron's own plugin.Serve (hashicorp/go-plugin), so it runs unchanged under
// Dkron and under dkron_exec. The seed imported github.com/victorcoder/dkron/plugin, Dkron's
// old module path; v4 lives at github.com/distribworks/dkron/v4.
//
// MyPlugin puts a prefix before every line of the execution's output. Config:
//
//	prefix  the text put before each line (default "[JOB] ", JOB being the job's name)
//
// Build: go build -o dkron-processor-myplugin .
package main

import (
	"bytes"

	"github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"
)

// MyPlugin is a Dkron execution processor (plugin.Processor).
type MyPlugin struct{}

// Process returns the execution with every output line prefixed; a last line without a
// newline stays without one.
func (MyPlugin) Process(args *plugin.ProcessorArgs) types.Execution {
	prefix, ok := args.Config["prefix"]
	if !ok {
		prefix = "[" + args.Execution.JobName + "] "
	}
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(args.Execution.Output, []byte("\n")) {
		if len(line) > 0 {
			out.WriteString(prefix)
			out.Write(line)
		}
	}
	args.Execution.Output = out.Bytes()
	return args.Execution
}

func main() {
	plugin.Serve(&plugin.ServeOpts{
		Processor: new(MyPlugin),
	})
}
