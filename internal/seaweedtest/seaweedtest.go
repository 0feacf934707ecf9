// Package seaweedtest holds what the tests that run SeaweedFS (`weed mini`)
// on loopback share: a port for each of its listeners, and the sign in its
// output that one was taken by another process anyway.
package seaweedtest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/porttest"
)

// Ports is where a weed mini listens.
type Ports struct {
	Args          []string // weed mini's flags for them
	Master, Filer string   // for weed shell's -master and -filer: HOST:PORT.GRPCPORT
}

// Choose chooses a free port for every listener of weed mini but S3's HTTP
// port, which the caller gives: master, filer and volume (HTTP and gRPC), S3's
// gRPC, debug, admin (HTTP and gRPC) and WebDAV (whose port weed mini checks
// even when WebDAV is off). The admin's legacy listener is off: its ports are
// fixed, so two servers at once would both want them.
func Choose(t testing.TB) Ports {
	t.Helper()
	p := Ports{Args: []string{"-admin.port.legacy", "0"}}
	port := map[string]int{}
	for _, f := range []string{"master.port", "master.port.grpc", "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc",
		"s3.port.grpc", "debug.port", "admin.port", "admin.port.grpc", "webdav.port"} {
		port[f] = porttest.Free(t)
		p.Args = append(p.Args, "-"+f, strconv.Itoa(port[f]))
	}
	p.Master = fmt.Sprintf("127.0.0.1:%d.%d", port["master.port"], port["master.port.grpc"])
	p.Filer = fmt.Sprintf("127.0.0.1:%d.%d", port["filer.port"], port["filer.port.grpc"])
	return p
}

// Moved reports whether weed mini's output says that a port it was given was
// taken before it bound it. weed mini then fails, or moves a gRPC listener to
// another port and runs on, and its shell and clients would dial whatever
// holds the port now: start it again on other ports.
func Moved(output string) bool {
	return strings.Contains(output, "already in use") || strings.Contains(output, "is not available")
}
