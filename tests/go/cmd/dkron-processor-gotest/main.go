// dkron-processor-gotest: a Dkron processor served with Dkron's own plugin.Serve (go-plugin,
// net/rpc + gob over yamux), for dkron_exec's tests. Its config says what to do:
//
//	append=TEXT  appends TEXT to the output
//	crash=true   exits with status 3 in the middle of the call
//	hang=true    never answers
//	echo=true    replaces the output with the config it received (key=value lines, sorted)
//	fields=true  replaces the output with the execution's fields as it received them
//
// It writes one line per call to os.Stderr (piped through go-plugin's stderr stream) and one
// to its real stderr through the standard logger.
package main

import (
	"fmt"
	"log"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"

	"dkronexec/testplugins/internal/execution"
)

type proc struct{}

func (proc) Process(args *plugin.ProcessorArgs) types.Execution {
	ex := &args.Execution
	cfg := args.Config
	fmt.Fprintf(os.Stderr, "gotest: processing %s\n", ex.JobName)
	log.Printf("gotest: real stderr for %s", ex.JobName)
	if cfg["crash"] == "true" {
		os.Exit(3)
	}
	if cfg["hang"] == "true" {
		time.Sleep(time.Hour)
	}
	if cfg["echo"] == "true" {
		keys := make([]string, 0, len(cfg))
		for k := range cfg {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, cfg[k])
		}
		ex.Output = []byte(b.String())
	}
	if cfg["fields"] == "true" {
		s := fmt.Sprintf("job=%s success=%v node=%s group=%d attempt=%d", ex.JobName, ex.Success, ex.NodeName, ex.Group, ex.Attempt)
		if ex.StartedAt != nil {
			s += fmt.Sprintf(" started=%d.%09d", ex.StartedAt.Seconds, ex.StartedAt.Nanos)
		}
		if ex.FinishedAt != nil {
			s += fmt.Sprintf(" finished=%d.%09d", ex.FinishedAt.Seconds, ex.FinishedAt.Nanos)
		}
		ex.Output = []byte(s)
	}
	if a, ok := cfg["append"]; ok {
		ex.Output = append(ex.Output, []byte(a)...)
	}
	return execution.Returned(ex)
}

func main() { plugin.Serve(&plugin.ServeOpts{Processor: proc{}}) }
