// Package seaweedtest holds what the tests that run SeaweedFS (`weed mini`)
// on loopback share: a port for each of its listeners, and the sign in its
// output that one was taken by another process anyway.
package seaweedtest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/porttest"
)

// Ports chooses a free port for every listener of weed mini but S3's HTTP
// port, which the caller gives: master, filer and volume (HTTP and gRPC), S3's
// gRPC, debug, admin (HTTP and gRPC) and WebDAV (whose port weed mini checks
// even when WebDAV is off). It returns them by flag name and as weed mini's
// flags, with the admin's legacy listener off: its ports are fixed, so two
// servers at once would both want them.
func Ports(t testing.TB) (map[string]int, []string) {
	t.Helper()
	ports := map[string]int{}
	args := []string{"-admin.port.legacy", "0"}
	for _, f := range []string{"master.port", "master.port.grpc", "filer.port", "filer.port.grpc", "volume.port", "volume.port.grpc",
		"s3.port.grpc", "debug.port", "admin.port", "admin.port.grpc", "webdav.port"} {
		ports[f] = porttest.Free(t)
		args = append(args, "-"+f, strconv.Itoa(ports[f]))
	}
	return ports, args
}

// Moved reports whether weed mini's output says that a port it was given was
// taken before it bound it. weed mini then fails, or moves a gRPC listener to
// another port and runs on, and its shell and clients would dial whatever
// holds the port now: start it again on other ports.
func Moved(output string) bool {
	return strings.Contains(output, "already in use") || strings.Contains(output, "is not available")
}
