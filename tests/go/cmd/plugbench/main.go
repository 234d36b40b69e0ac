// plugbench: the Go baseline of dkron_exec's benches. It starts one plugin through Dkron's own
// plugin client, set up as Dkron's agent sets it up (cmd/plugins.go pluginFactory: Dkron's
// Handshake, Managed, plugin.PluginMap, net/rpc for processors, gRPC for executors), makes one
// warm-up call, then calls it one call at a time from this goroutine until -duration is over, and
// prints one JSON line: calls, wall_s, calls_per_s, p50_us, p99_us, startup_ms.
//
//	plugbench -mode processor -plugin PATH [-config k=v,k=v] [-size BYTES] [-duration 2s]
//	plugbench -mode executor  -plugin PATH [-config command=x,update=true] [-duration 2s]
//
// The plugin's start-up (startup_ms) is not part of the measured loop.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type options struct {
	mode     string
	path     string
	config   map[string]string
	size     int
	duration time.Duration
}

type report struct {
	Mode          string  `json:"mode"`
	Calls         int     `json:"calls"`
	WallS         float64 `json:"wall_s"`
	CallsPerS     float64 `json:"calls_per_s"`
	P50Us         float64 `json:"p50_us"`
	P99Us         float64 `json:"p99_us"`
	StartupMs     float64 `json:"startup_ms"`
	StatusUpdates int     `json:"status_updates"`
	OutputBytes   int     `json:"output_bytes,omitempty"`
}

// countingStatus is the host's StatusHelper: it acknowledges every byte an executor streams.
type countingStatus struct{ updates int }

func (c *countingStatus) Update(b []byte, _ bool) (int64, error) {
	c.updates++
	return int64(len(b)), nil
}

func parseOptions() (options, error) {
	mode := flag.String("mode", "processor", "processor or executor")
	path := flag.String("plugin", "", "the plugin binary")
	config := flag.String("config", "", "the plugin config, k=v pairs separated by commas")
	size := flag.Int("size", 1024, "processor mode: bytes of execution output per call")
	duration := flag.Duration("duration", 2*time.Second, "how long to call, after the warm-up call")
	flag.Parse()
	o := options{mode: *mode, path: *path, config: map[string]string{}, size: *size, duration: *duration}
	if o.mode != dkplugin.ProcessorPluginName && o.mode != dkplugin.ExecutorPluginName {
		return o, fmt.Errorf("-mode must be processor or executor (got %q)", o.mode)
	}
	if o.path == "" {
		return o, errors.New("-plugin is required (the plugin binary)")
	}
	if o.size < 0 || o.duration <= 0 {
		return o, fmt.Errorf("-size must be >= 0 and -duration > 0 (got %d, %s)", o.size, o.duration)
	}
	for _, pair := range strings.Split(*config, ",") {
		if pair == "" {
			continue
		}
		key, value, ok := strings.Cut(pair, "=")
		if !ok {
			return o, fmt.Errorf("-config: %q is not key=value", pair)
		}
		o.config[key] = value
	}
	return o, nil
}

// start launches the plugin the way Dkron's agent does and dispenses it.
func start(o options) (*plugin.Client, any, error) {
	client := plugin.NewClient(&plugin.ClientConfig{
		Cmd:             exec.Command(o.path),
		HandshakeConfig: dkplugin.Handshake,
		Managed:         true,
		Plugins:         dkplugin.PluginMap,
		// stdout carries the one result line: the plugin's own output goes to stderr.
		SyncStdout:       os.Stderr,
		SyncStderr:       os.Stderr,
		Logger:           hclog.New(&hclog.LoggerOptions{Name: "plugins", Level: hclog.Warn, Output: os.Stderr}),
		AllowedProtocols: []plugin.Protocol{protocolOf(o.mode)},
	})
	rpc, err := client.Client()
	if err != nil {
		return client, nil, err
	}
	raw, err := rpc.Dispense(o.mode)
	return client, raw, err
}

func protocolOf(mode string) plugin.Protocol {
	if mode == dkplugin.ExecutorPluginName {
		return plugin.ProtocolGRPC
	}
	return plugin.ProtocolNetRPC
}

// caller is one call of the plugin, checked: a wrong answer is an error, not a fast call.
func caller(o options, raw any, status *countingStatus) (func() error, error) {
	switch p := raw.(type) {
	case dkplugin.Processor:
		output := []byte(strings.Repeat("x", o.size))
		return func() error {
			now := timestamppb.Now()
			got := p.Process(&dkplugin.ProcessorArgs{
				Execution: types.Execution{
					JobName: "bench", Success: true, Output: output, NodeName: "plugbench",
					Group: now.AsTime().UnixNano(), Attempt: 1, StartedAt: now, FinishedAt: now,
				},
				Config: o.config,
			})
			if got.JobName != "bench" || len(got.Output) != len(output) {
				return fmt.Errorf("the processor answered job %q with %d bytes (sent %d)", got.JobName, len(got.Output), len(output))
			}
			return nil
		}, nil
	case dkplugin.Executor:
		return func() error {
			resp, err := p.Execute(&types.ExecuteRequest{JobName: "bench", Config: o.config}, status)
			if err != nil {
				return err
			}
			if resp.Error != "" {
				return fmt.Errorf("the executor answered an error: %s", resp.Error)
			}
			return nil
		}, nil
	}
	return nil, fmt.Errorf("the plugin dispensed a %T, not a %s", raw, o.mode)
}

func run(o options) (report, error) {
	began := time.Now()
	client, raw, err := start(o)
	defer client.Kill()
	if err != nil {
		return report{}, fmt.Errorf("starting %s: %w", o.path, err)
	}
	startup := time.Since(began)
	status := &countingStatus{}
	call, err := caller(o, raw, status)
	if err != nil {
		return report{}, err
	}
	if err := call(); err != nil { // warm-up, not counted
		return report{}, fmt.Errorf("warm-up call: %w", err)
	}
	var latencies []time.Duration
	loop := time.Now()
	// At least one measured call, however short the duration.
	for end := loop.Add(o.duration); len(latencies) == 0 || time.Now().Before(end); {
		t := time.Now()
		if err := call(); err != nil {
			return report{}, fmt.Errorf("call %d: %w", len(latencies)+1, err)
		}
		latencies = append(latencies, time.Since(t))
	}
	wall := time.Since(loop)
	slices.Sort(latencies)
	micros := func(q float64) float64 {
		return float64(latencies[int(q*float64(len(latencies)-1))].Nanoseconds()) / 1e3
	}
	r := report{
		Mode: o.mode, Calls: len(latencies), WallS: wall.Seconds(),
		CallsPerS: float64(len(latencies)) / wall.Seconds(), P50Us: micros(0.5), P99Us: micros(0.99),
		StartupMs: float64(startup.Microseconds()) / 1e3, StatusUpdates: status.updates,
	}
	if o.mode == dkplugin.ProcessorPluginName {
		r.OutputBytes = o.size
	}
	return r, nil
}

func main() {
	o, err := parseOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, "plugbench:", err)
		os.Exit(2)
	}
	r, err := run(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "plugbench:", err)
		os.Exit(1)
	}
	line, _ := json.Marshal(r)
	fmt.Println(string(line))
}
