// gobvectors prints, as xxd-style hex dumps, the bytes Go's encoding/gob and net/rpc put on the
// wire for Dkron v4.0.5's processor protocol: the Rust gob codec is tested against them
// (rust/core/tests/data/goplugin/*.hex), and tests/test_gob_vectors.py checks that those files are
// exactly what this program writes, so the vectors can be made again from the repository alone.
//
//	gobvectors OUT_DIR
//
// It writes five files. call1.req.hex and call2.req.hex: the host's two Plugin.Process calls on
// one stream (the second carries no type definitions, as net/rpc keeps one encoder per stream).
// call1.resp.hex: the plugin's reply. control.req.hex and control.resp.hex: the control stream's
// Dispenser.Dispense("processor") and Control.Quit(true), and their answers.
package main

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"net/rpc"
	"os"
	"path/filepath"
	"strings"

	dkplugin "github.com/distribworks/dkron/v4/plugin"
	"github.com/distribworks/dkron/v4/types"
	"google.golang.org/protobuf/types/known/timestamppb"

	"dkronexec/testplugins/internal/execution"
)

// stream is one direction of one net/rpc connection: a single gob encoder, as net/rpc uses.
type stream struct {
	buf bytes.Buffer
	enc *gob.Encoder
}

func newStream() *stream {
	s := &stream{}
	s.enc = gob.NewEncoder(&s.buf)
	return s
}

// send encodes values in order and returns the bytes they added.
func (s *stream) send(values ...any) []byte {
	start := s.buf.Len()
	for _, v := range values {
		if err := s.enc.Encode(v); err != nil {
			fail(err)
		}
	}
	return append([]byte(nil), s.buf.Bytes()[start:]...)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gobvectors OUT_DIR")
		os.Exit(2)
	}
	out := os.Args[1]

	at := &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 123456789}
	ex := &types.Execution{
		JobName: "job1", Success: true, Output: []byte("hello\n"), NodeName: "node1",
		Group: 1700000000123456789, Attempt: 1, StartedAt: at, FinishedAt: at,
	}
	args := dkplugin.ProcessorArgs{Execution: execution.Returned(ex), Config: dkplugin.Config{"forward": "true"}}

	calls := newStream()
	save(out, "call1.req.hex", calls.send(&rpc.Request{ServiceMethod: "Plugin.Process", Seq: 0}, &args))
	save(out, "call2.req.hex", calls.send(&rpc.Request{ServiceMethod: "Plugin.Process", Seq: 1}, &args))
	replies := newStream()
	save(out, "call1.resp.hex", replies.send(&rpc.Response{ServiceMethod: "Plugin.Process", Seq: 0}, ex))

	control, answers := newStream(), newStream()
	save(out, "control.req.hex", control.send(
		&rpc.Request{ServiceMethod: "Dispenser.Dispense", Seq: 0}, "processor",
		&rpc.Request{ServiceMethod: "Control.Quit", Seq: 1}, true,
	))
	save(out, "control.resp.hex", answers.send(
		&rpc.Response{ServiceMethod: "Dispenser.Dispense", Seq: 0}, uint32(1),
		&rpc.Response{ServiceMethod: "Control.Quit", Seq: 1}, &struct{}{},
	))
}

// save writes data as `xxd` does: offset, 16 bytes in groups of two, then the printable text.
func save(dir, name string, data []byte) {
	var b strings.Builder
	for off := 0; off < len(data); off += 16 {
		row := data[off:min(off+16, len(data))]
		fmt.Fprintf(&b, "%08x: ", off)
		for i := 0; i < 16; i++ {
			if i < len(row) {
				fmt.Fprintf(&b, "%02x", row[i])
			} else {
				b.WriteString("  ")
			}
			if i%2 == 1 {
				b.WriteByte(' ')
			}
		}
		b.WriteByte(' ')
		for _, c := range row {
			if c >= 0x20 && c < 0x7f {
				b.WriteByte(c)
			} else {
				b.WriteByte('.')
			}
		}
		b.WriteByte('\n')
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gobvectors:", err)
	os.Exit(1)
}
