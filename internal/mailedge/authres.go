package mailedge

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"net"
	"net/mail"
	"strings"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"
)

// Resolver answers DNS queries for SPF, DKIM and DMARC; *net.Resolver is
// one. Tests inject their own, so they need no DNS.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Bounds of DKIM verification: signatures verified per message, and the
// largest key record and RSA key (RFC 8301 §3.2: verifiers handle 1,024 to
// 4,096 bits; go-msgauth refuses fewer than 1,024).
const (
	maxDKIM       = 5
	maxDKIMRecord = 2048 // bytes of one key record (a 4,096-bit key's is about 750)
	maxDKIMBits   = 4096
)

// errDKIMKey refuses a key record over the bounds; go-msgauth reports it as a
// permerror, and the signature is not verified.
var errDKIMKey = errors.New("key record larger than this verifier takes (RSA keys up to 4,096 bits)")

// dkimKeys is txt for DKIM key records, refusing one over the bounds.
func dkimKeys(txt func(string) ([]string, error)) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		recs, err := txt(name)
		for _, r := range recs {
			if len(r) > maxDKIMRecord || rsaBits(r) > maxDKIMBits {
				return nil, errDKIMKey
			}
		}
		return recs, err
	}
}

// rsaBits is the size of the RSA key in a DKIM key record's p= tag, or 0.
func rsaBits(rec string) int {
	for tag := range strings.SplitSeq(rec, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(tag), "=")
		if strings.TrimSpace(k) != "p" {
			continue
		}
		der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(v), ""))
		if err != nil {
			return 0
		}
		if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
			if k, ok := pub.(*rsa.PublicKey); ok {
				return k.N.BitLen()
			}
		}
		if k, err := x509.ParsePKCS1PublicKey(der); err == nil {
			return k.N.BitLen()
		}
	}
	return 0
}

// authResults evaluates SPF (the client's address against the envelope
// sender's domain, or the HELO name for a null sender; blitiri.com.ar/go/spf,
// as go-msgauth has no SPF), DKIM and DMARC (go-msgauth) for a message, and
// returns the Authentication-Results header field to prepend (RFC 8601), with
// its CRLF. Only the header block and the body hash are read, never the body's
// structure. Every name from the message is cleaned before it is written.
func (e *Edge) authResults(ctx context.Context, ip net.IP, helo, mailFrom string, raw []byte) string {
	ctx, cancel := context.WithTimeout(ctx, dnsTimeout)
	defer cancel()
	txt := func(name string) ([]string, error) { return e.cfg.Resolver.LookupTXT(ctx, name) }

	res, _ := spf.CheckHostWithSender(ip, helo, mailFrom, spf.WithResolver(e.cfg.Resolver), spf.WithContext(ctx))
	spfDomain := helo
	if _, d, ok := strings.Cut(mailFrom, "@"); ok {
		spfDomain = d
	}
	results := []authres.Result{&authres.SPFResult{Value: authres.ResultValue(res), From: clean(mailFrom), Helo: clean(helo)}}
	if res == "" {
		results[0].(*authres.SPFResult).Value = authres.ResultNone
	}

	var dkimPass []string
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: dkimKeys(txt), MaxVerifications: maxDKIM})
	switch {
	case err != nil && len(verifs) == 0:
		results = append(results, &authres.DKIMResult{Value: authres.ResultPermError, Reason: "malformed header"})
	case len(verifs) == 0:
		results = append(results, &authres.DKIMResult{Value: authres.ResultNone})
	}
	for _, v := range verifs {
		r := &authres.DKIMResult{Value: authres.ResultPass, Domain: clean(v.Domain), Identifier: clean(v.Identifier)}
		switch {
		case v.Err == nil:
			dkimPass = append(dkimPass, strings.ToLower(v.Domain))
		case dkim.IsTempFail(v.Err):
			r.Value = authres.ResultTempError
		case dkim.IsPermFail(v.Err):
			r.Value = authres.ResultPermError
		default:
			r.Value = authres.ResultFail
		}
		results = append(results, r)
	}

	results = append(results, dmarcResult(raw, txt, strings.ToLower(spfDomain), res == spf.Pass, dkimPass))
	return "Authentication-Results: " + authres.Format(e.cfg.Hostname, results) + "\r\n"
}

// dmarcResult evaluates DMARC for the header From domain: pass when SPF or a
// DKIM signature passed for a domain aligned with it (relaxed: the same
// organizational domain by the public suffix list; strict: equal).
func dmarcResult(raw []byte, txt func(string) ([]string, error), spfDomain string, spfPass bool, dkimPass []string) *authres.DMARCResult {
	from := headerFromDomain(raw)
	if from == "" {
		return &authres.DMARCResult{Value: authres.ResultNone, Reason: "no single From domain"}
	}
	opts := &dmarc.LookupOptions{LookupTXT: txt}
	rec, err := dmarc.LookupWithOptions(from, opts)
	if errors.Is(err, dmarc.ErrNoPolicy) {
		if org := orgDomain(from); org != from {
			rec, err = dmarc.LookupWithOptions(org, opts)
		}
	}
	switch {
	case errors.Is(err, dmarc.ErrNoPolicy):
		return &authres.DMARCResult{Value: authres.ResultNone, From: clean(from)}
	case dmarc.IsTempFail(err):
		return &authres.DMARCResult{Value: authres.ResultTempError, From: clean(from)}
	case err != nil:
		return &authres.DMARCResult{Value: authres.ResultPermError, From: clean(from)}
	}
	aligned := func(d string, mode dmarc.AlignmentMode) bool {
		if mode == dmarc.AlignmentStrict {
			return d == from
		}
		return orgDomain(d) == orgDomain(from)
	}
	pass := spfPass && aligned(spfDomain, rec.SPFAlignment)
	for _, d := range dkimPass {
		pass = pass || aligned(d, rec.DKIMAlignment)
	}
	if pass {
		return &authres.DMARCResult{Value: authres.ResultPass, From: clean(from)}
	}
	return &authres.DMARCResult{Value: authres.ResultFail, From: clean(from)}
}

// orgDomain is d's organizational domain (public suffix + 1), or d.
func orgDomain(d string) string {
	if org, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return org
	}
	return d
}

// headerFromDomain is the domain of the message's one From address, read
// from its header block only; "" when there is none or more than one.
func headerFromDomain(raw []byte) string {
	addrs := headerFrom(raw)
	if len(addrs) != 1 {
		return ""
	}
	_, d, _ := strings.Cut(strings.ToLower(addrs[0]), "@")
	return d
}

// headerFrom is the addresses of the message's From header field (the
// header block only: net/mail reads no further).
func headerFrom(raw []byte) []string {
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return nil
	}
	if len(m.Header["From"]) != 1 {
		return nil
	}
	list, err := m.Header.AddressList("From")
	if err != nil {
		return nil
	}
	out := make([]string, len(list))
	for i, a := range list {
		out[i] = a.Address
	}
	return out
}

// clean keeps a value from the message or the session fit for a header: at
// most 255 printable ASCII characters without quotes or backslashes, or "".
func clean(s string) string {
	if len(s) > 255 {
		return ""
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' {
			return ""
		}
	}
	return s
}
