package mailedge

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/mail"
)

// FuzzAddress: an address the edge accepts is lowercase local@domain with a
// valid domain and nothing a header or an object key could not hold.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{addrA, "A0123@Agents.Example.com", "x@y", "a b@c.d", "\"q\"@c.d", "a@b@c.d", "a\r\n@c.d", "@c.d", "a@", "a@-c.d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		addr, domain, ok := splitAddress(s)
		if !ok {
			return
		}
		if addr != strings.ToLower(s) || clean(addr) != addr || strings.Count(addr, "@") != 1 || !strings.HasSuffix(addr, "@"+domain) || !mail.ValidDomain(domain) {
			t.Fatalf("splitAddress(%q) = %q, %q", s, addr, domain)
		}
	})
}

// FuzzAuthResults: whatever the message and the envelope say, the edge's
// Authentication-Results is one header line: no CR or LF inside, so a sender
// cannot add header fields of its own above it.
func FuzzAuthResults(f *testing.F) {
	f.Add("alice@example.net", "client.example.net", []byte("From: <alice@example.net>\r\nDKIM-Signature: v=1; a=ed25519-sha256; d=example.net; s=s1; h=from; bh=x; b=y\r\n\r\nhi\r\n"))
	f.Add("", "evil\r\nX-Injected: 1", []byte("From: \"x\r\n y\" <a@b.c>\r\n\r\n"))
	f.Add("a\"b@c.d", "h", []byte("From: a@example.net, b@example.org\r\n\r\n"))
	v := newEnv(f, nil)
	v.res.txt["example.net"] = []string{"v=spf1 ip4:127.0.0.1 -all"}
	v.res.txt["_dmarc.example.net"] = []string{"v=DMARC1; p=reject"}
	f.Fuzz(func(t *testing.T, from, helo string, raw []byte) {
		ar := v.e.authResults(context.Background(), net.IPv4(127, 0, 0, 1), helo, from, raw)
		if !strings.HasPrefix(ar, "Authentication-Results: mx."+domain+"; ") || !strings.HasSuffix(ar, "\r\n") || strings.ContainsAny(ar[:len(ar)-2], "\r\n") {
			t.Fatalf("Authentication-Results is not one header line: %q", ar)
		}
	})
}

// FuzzSession speaks arbitrary SMTP to the inbound and submission listeners
// (commands, parameters, AUTH exchanges, message data): the edge never
// panics (go-smtp would answer 421 Internal server error), and whatever it
// stores is a message for a live inbox under that inbox's prefix, after the
// edge's Authentication-Results.
func FuzzSession(f *testing.F) {
	v := newEnv(f, func(c *Config) {
		c.IPRate, c.RecipientRate, c.SenderRate = Rate{1 << 30, time.Minute}, Rate{1 << 30, time.Minute}, Rate{1 << 30, time.Minute}
		c.MaxSize = 1 << 16
	})
	tok := v.key.token(f, issuer, audience, omniA, walletA, t0, 300)
	ir := base64.StdEncoding.EncodeToString([]byte("n,,\x01auth=Bearer " + tok + "\x01\x01"))
	msg := "From: <" + addrA + ">\r\nSubject: x\r\n\r\nhello\r\n.\r\n"
	for _, seed := range []struct {
		sub  bool
		text string
	}{
		{false, "EHLO c\r\nMAIL FROM:<s@example.net> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<" + addrA + ">\r\nDATA\r\n" + msg},
		{false, "HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<" + strings.ToUpper(addrB) + "> NOTIFY=NEVER\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n" + msg},
		{false, "EHLO c\r\nMAIL FROM:<s@example.net> SIZE=99999999999\r\nBDAT 5 LAST\r\nhello"},
		{true, "EHLO c\r\nAUTH OAUTHBEARER " + ir + "\r\nMAIL FROM:<" + addrA + ">\r\nRCPT TO:<" + addrB + ">\r\nDATA\r\n" + msg},
		{true, "EHLO c\r\nAUTH OAUTHBEARER\r\n=\r\n=\r\nAUTH PLAIN AGEAYg==\r\nMAIL FROM:<" + addrA + ">\r\n"},
		{true, "EHLO c\r\nAUTH OAUTHBEARER bixhPXgsAWF1dGg9QmVhcmVyIHgBAQ==\r\n\r\n*\r\nSTARTTLS\r\nRSET\r\nNOOP\r\nVRFY x\r\n"},
	} {
		f.Add(seed.sub, []byte(seed.text))
	}
	f.Fuzz(func(t *testing.T, submission bool, in []byte) {
		addr := v.mx
		if submission {
			addr = v.sub
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			c.Write(in)
			c.(*net.TCPConn).CloseWrite()
		}()
		out, _ := io.ReadAll(c)
		if bytes.Contains(out, []byte("Internal server error")) {
			t.Fatalf("the edge panicked on %q:\n%s", in, out)
		}
		for _, o := range v.stored() {
			p, _, _, ok := mail.ParseMessageKey(o.Key)
			if !ok || (p != strings.ToLower(walletA)+"/"+addrA+"/" && p != strings.ToLower(walletB)+"/"+addrB+"/") {
				t.Fatalf("stored %s outside a live inbox", o.Key)
			}
			b, err := v.store.Get(context.Background(), o.Key)
			if err != nil || !bytes.HasPrefix(b, []byte("Authentication-Results: mx."+domain+"; ")) {
				t.Fatalf("stored %s without the edge's header first: %v", o.Key, err)
			}
			v.store.Delete(context.Background(), o.Key) // the next input starts from an empty store
		}
	})
}
