package federation

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Fingerprint connects to the issuer over TLS, verifies its certificate chain
// against roots (nil: the system's) and returns the SHA-1 fingerprint, in hex,
// of the chain's root CA certificate: what Alibaba Cloud's RAM pins for an
// OIDC provider (the last certificate of the chain). It reads nothing but the
// handshake. A plain-http issuer has no certificate: Alibaba Cloud accepts
// only https issuers.
func Fingerprint(ctx context.Context, issuer string, roots *x509.CertPool) (string, error) {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("issuer %q is not a URL", issuer)
	}
	if u.Scheme != "https" {
		return "", fmt.Errorf("issuer %s is plain http: Alibaba Cloud trusts only https issuers; serve the broker over TLS (server --issuer https://…) and register that URL", issuer)
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	d := tls.Dialer{Config: &tls.Config{ServerName: u.Hostname(), RootCAs: roots, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return "", fmt.Errorf("cannot fetch the issuer's certificate from %s: %v (a private CA: pass --ca-file)", u.Host, err)
	}
	defer conn.Close()
	chains := conn.(*tls.Conn).ConnectionState().VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return "", fmt.Errorf("the issuer's certificate chain was not verified")
	}
	root := chains[0][len(chains[0])-1]
	sum := sha1.Sum(root.Raw)
	return hex.EncodeToString(sum[:]), nil
}
