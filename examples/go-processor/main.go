// dkron-processor-wordcount: a dkron_exec processor plugin in Go, standard library only,
// written from docs/PROTOCOL.md. It appends "words: N, lines: M" to the execution's output
// (config "label" replaces "words"), and answers calls concurrently.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

const cookieKey = "DKRON_PLUGIN_MAGIC_COOKIE"
const cookieValue = "b29a76488b6f3ca7955c5f769b50641f0fcd88748d8cedecda313d516320ca19"

var maxFrame = 64 << 20

type conn struct {
	mu sync.Mutex
	w  io.Writer
	r  *bufio.Reader
}

// send writes one frame: u32 BE L = 4+H+B, u32 BE H, header JSON, body.
func (c *conn) send(header map[string]any, body []byte) error {
	head, err := json.Marshal(header)
	if err != nil {
		return err
	}
	if 4+len(head)+len(body) > maxFrame {
		return fmt.Errorf("frame too large")
	}
	buf := make([]byte, 8, 8+len(head)+len(body))
	binary.BigEndian.PutUint32(buf[0:4], uint32(4+len(head)+len(body)))
	binary.BigEndian.PutUint32(buf[4:8], uint32(len(head)))
	buf = append(buf, head...)
	buf = append(buf, body...)
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err = c.w.Write(buf)
	return err
}

func (c *conn) recv() (map[string]any, []byte, error) {
	var prefix [4]byte
	if _, err := io.ReadFull(c.r, prefix[:]); err != nil {
		return nil, nil, err
	}
	l := int(binary.BigEndian.Uint32(prefix[:]))
	if l > maxFrame || l < 4 {
		return nil, nil, fmt.Errorf("bad frame length %d", l)
	}
	data := make([]byte, l)
	if _, err := io.ReadFull(c.r, data); err != nil {
		return nil, nil, err
	}
	h := int(binary.BigEndian.Uint32(data[:4]))
	if h > l-4 {
		return nil, nil, fmt.Errorf("bad header length %d", h)
	}
	dec := json.NewDecoder(bytes.NewReader(data[4 : 4+h]))
	dec.UseNumber() // ids and "group" are 64-bit integers
	var header map[string]any
	if err := dec.Decode(&header); err != nil {
		return nil, nil, err
	}
	return header, data[4+h:], nil
}

func process(header map[string]any, body []byte) (map[string]any, []byte) {
	config, _ := header["config"].(map[string]any)
	label := "words"
	if v, ok := config["label"].(string); ok && v != "" {
		label = v
	}
	words := len(strings.Fields(string(body)))
	lines := bytes.Count(body, []byte("\n"))
	out := append(append([]byte{}, body...), []byte(fmt.Sprintf("%s: %d, lines: %d\n", label, words, lines))...)
	// Only the output changes: the host keeps every execution field we leave out.
	return map[string]any{"type": "result", "id": header["id"], "execution": map[string]any{}}, out
}

func main() {
	if os.Getenv(cookieKey) != cookieValue {
		fmt.Fprintln(os.Stderr, "This binary is a dkron_exec plugin (the processor 'wordcount'); it is started by dkron_exec, not run directly.")
		os.Exit(1)
	}
	speaks := false
	for _, v := range strings.Split(os.Getenv("DKRON_EXEC_PROTOCOL_VERSIONS"), ",") {
		speaks = speaks || strings.TrimSpace(v) == "1"
	}
	if !speaks {
		fmt.Fprintln(os.Stderr, "wordcount: the host does not offer protocol version 1")
		os.Exit(1)
	}
	if m, err := strconv.Atoi(os.Getenv("DKRON_EXEC_MAX_FRAME")); err == nil && m > 0 {
		maxFrame = m
	}
	fd, err := strconv.Atoi(os.Getenv("DKRON_EXEC_PLUGIN_FD"))
	if err != nil {
		fd = 3
	}
	sock, err := net.FileConn(os.NewFile(uintptr(fd), "dkron-plugin-channel"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "wordcount: no channel on fd", fd, err)
		os.Exit(1)
	}
	c := &conn{w: sock, r: bufio.NewReaderSize(sock, 1<<16)}
	hello := map[string]any{"type": "hello", "protocol": 1, "plugin_type": "processor", "name": "wordcount",
		"max_in_flight": 16, "capabilities": []string{}}
	if err := c.send(hello, nil); err != nil {
		os.Exit(1)
	}
	fmt.Println("wordcount plugin ready") // stdout is free: it goes to the host's log
	for {
		header, body, err := c.recv()
		if err != nil {
			os.Exit(0) // EOF: the host is gone or done with us
		}
		switch header["type"] {
		case "shutdown":
			os.Exit(0)
		case "process":
			go func() {
				answer, out := process(header, body)
				c.send(answer, out)
			}()
		case "welcome", "cancel":
			// Calls are quick: nothing to cancel.
		default:
			if id, ok := header["id"]; ok {
				c.send(map[string]any{"type": "error", "id": id, "message": fmt.Sprintf("unknown request %v", header["type"])}, nil)
			}
		}
	}
}
