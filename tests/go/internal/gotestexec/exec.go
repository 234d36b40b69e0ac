// Package gotestexec is the behaviour of dkron_exec's test executors (Dkron's executor interface,
// served over go-plugin gRPC by the commands beside it). Its config says what to do:
//
//	chunks=N       streams "out I\n" N times through the host's StatusHelper (and "err I\n" as
//	               stderr too when with_stderr=true), then returns all of it as the output
//	fail=TEXT      answers with TEXT as the ExecuteResponse's error
//	grpc_error=T   fails the call itself (a gRPC status) with T
//	crash=true     exits with status 3 after streaming
//	hang=true      never answers
//	echo=true      returns the job name and the config it received (key=value lines, sorted)
//	stdio=TEXT     writes TEXT to os.Stdout and os.Stderr (piped through go-plugin's stdio
//	               stream) and to its real stderr through the standard logger
package gotestexec

import (
	"errors"
	"fmt"
	"log"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"
)

type Exec struct{}

func (Exec) Execute(args *types.ExecuteRequest, cb dkplugin.StatusHelper) (*types.ExecuteResponse, error) {
	cfg := args.Config
	if t := cfg["stdio"]; t != "" {
		fmt.Fprintf(os.Stdout, "piped stdout %s\n", t)
		fmt.Fprintf(os.Stderr, "piped stderr %s\n", t)
		log.Printf("real stderr %s", t)
	}
	if cfg["echo"] == "true" {
		keys := make([]string, 0, len(cfg))
		for k := range cfg {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		fmt.Fprintf(&b, "job=%s\n", args.JobName)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s=%s\n", k, cfg[k])
		}
		return &types.ExecuteResponse{Output: []byte(b.String())}, nil
	}
	var out []byte
	send := func(s string, stderr bool) error {
		out = append(out, s...)
		n, err := cb.Update([]byte(s), stderr)
		if err == nil && n != int64(len(s)) {
			err = fmt.Errorf("the host acknowledged %d bytes of %d", n, len(s))
		}
		return err
	}
	n, _ := strconv.Atoi(cfg["chunks"])
	for i := 0; i < n; i++ {
		if err := send(fmt.Sprintf("out %d\n", i), false); err != nil {
			return nil, err
		}
		if cfg["with_stderr"] == "true" {
			if err := send(fmt.Sprintf("err %d\n", i), true); err != nil {
				return nil, err
			}
		}
	}
	if cfg["crash"] == "true" {
		os.Exit(3)
	}
	if cfg["hang"] == "true" {
		time.Sleep(time.Hour)
	}
	if e := cfg["grpc_error"]; e != "" {
		return nil, errors.New(e)
	}
	return &types.ExecuteResponse{Output: out, Error: cfg["fail"]}, nil
}
