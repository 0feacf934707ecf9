package federation

import (
	"context"
	"crypto/sha1"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestFingerprint: the fingerprint is SHA-1 of the verified chain's root, and
// nothing is fingerprinted that does not verify or is not https.
func TestFingerprint(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	ctx := context.Background()
	otherName := strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) // httptest's certificate names 127.0.0.1, not localhost
	got, err := Fingerprint(ctx, srv.URL, roots)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(srv.Certificate().Raw)
	if got != hex.EncodeToString(sum[:]) {
		t.Fatalf("fingerprint %s, want %x", got, sum)
	}
	if _, err := Fingerprint(ctx, srv.URL, nil); err == nil || !strings.Contains(err.Error(), "--ca-file") {
		t.Fatalf("an untrusted certificate was fingerprinted: %v", err)
	}
	if _, err := Fingerprint(ctx, otherName, roots); err == nil {
		t.Fatal("a certificate for another name was fingerprinted")
	}
	if _, err := Fingerprint(ctx, "http://127.0.0.1:1", roots); err == nil || !strings.Contains(err.Error(), "only https") {
		t.Fatalf("plain http: %v", err)
	}
}
