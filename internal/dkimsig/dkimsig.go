// Package dkimsig is DKIM (RFC 6376) split in two halves, so that the body of a
// message never has to leave the agent's daemon: the daemon canonicalises the
// header fields it signs (relaxed) and hashes the body (relaxed, SHA-256); the
// broker, holding only those, builds the DKIM-Signature header and the exact
// bytes its signature covers, which the enclave signs (Ed25519, RFC 8463, and
// RSA-SHA256). Standard library only: the daemon and the broker both link it.
package dkimsig

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// Limits of a header block handed to the broker.
const (
	MaxBlock  = 64 << 10 // bytes
	MaxFields = 64
)

// Algorithms (the a= tag) and key types (k= in DNS).
const (
	AlgEd25519 = "ed25519-sha256"
	AlgRSA     = "rsa-sha256"
)

// RelaxedHeader canonicalises one header field, given as "Name: value" without
// its final CRLF and possibly folded, by the relaxed algorithm
// (RFC 6376 §3.4.2): the name lowercased, the value unfolded, runs of
// whitespace made one space, whitespace around the colon and at the end removed.
func RelaxedHeader(field string) string {
	name, value, _ := strings.Cut(field, ":")
	value = strings.NewReplacer("\r\n", "", "\r", "", "\n", "").Replace(value)
	return strings.ToLower(strings.TrimRight(name, " \t")) + ":" + strings.TrimSpace(collapse(value))
}

// collapse makes every run of spaces and tabs in s one space.
func collapse(s string) string {
	var b strings.Builder
	space := false
	for i := 0; i < len(s); i++ {
		if c := s[i]; c == ' ' || c == '\t' {
			space = true
			continue
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteByte(s[i])
	}
	if space {
		b.WriteByte(' ')
	}
	return b.String()
}

// BodyHash is the bh= tag of body: base64 of SHA-256 of the body canonicalised
// by the relaxed algorithm (RFC 6376 §3.4.4; lines end in CRLF or LF).
func BodyHash(body []byte) string {
	lines := strings.Split(strings.ReplaceAll(string(body), "\r\n", "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(collapse(l), " ")
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l + "\r\n"))
	}
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// Field is one canonical header field of a block.
type Field struct {
	Name  string // lowercase
	Value string // canonical value
}

// Block is the header fields a signature covers, canonical, in the order of
// its h= tag (for a name signed twice, the bottom-most instance first).
type Block struct {
	Fields []Field
	Raw    string // the canonical block: "name:value\r\n" per field
}

// ParseBlock checks a canonical header block as the daemon sends it: fields
// "name:value" in relaxed canonical form, each ending in CRLF, at most
// MaxFields and MaxBlock bytes. The error says what is wrong.
func ParseBlock(raw string) (*Block, error) {
	if len(raw) > MaxBlock {
		return nil, fmt.Errorf("the header block is %d bytes, the limit is %d", len(raw), MaxBlock)
	}
	if raw == "" || !strings.HasSuffix(raw, "\r\n") {
		return nil, errors.New("the header block must be header fields each ending in CRLF")
	}
	lines := strings.Split(strings.TrimSuffix(raw, "\r\n"), "\r\n")
	if len(lines) > MaxFields {
		return nil, fmt.Errorf("the header block has %d fields, the limit is %d", len(lines), MaxFields)
	}
	b := &Block{Raw: raw}
	for i, l := range lines {
		name, value, ok := strings.Cut(l, ":")
		if !ok || !validName(name) || strings.ContainsAny(l, "\r\n") || RelaxedHeader(l) != l {
			return nil, fmt.Errorf("header field %d is not in relaxed canonical form (lowercase name, a colon, the unfolded value with single spaces)", i+1)
		}
		for j := 0; j < len(value); j++ {
			if c := value[j]; c < 0x20 && c != '\t' || c == 0x7f {
				return nil, fmt.Errorf("header field %d holds a control character", i+1)
			}
		}
		b.Fields = append(b.Fields, Field{Name: name, Value: value})
	}
	return b, nil
}

// validName: a lowercase field name (RFC 5322 ftext, printable ASCII but ':').
func validName(s string) bool {
	if s == "" || len(s) > 76 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' || c == ':' || c >= 'A' && c <= 'Z' {
			return false
		}
	}
	return true
}

// From is the one address of the block's one From field, lowercased.
func (b *Block) From() (string, error) {
	var from []string
	for _, f := range b.Fields {
		if f.Name == "from" {
			from = append(from, f.Value)
		}
	}
	if len(from) != 1 {
		return "", fmt.Errorf("the header block must hold exactly one From field, it holds %d", len(from))
	}
	list, err := mail.ParseAddressList(from[0])
	if err != nil || len(list) != 1 {
		return "", errors.New("the From field must name exactly one mailbox, e.g. From: Agent <a1b2c3d4e5f6@agents.example.com>")
	}
	return strings.ToLower(list[0].Address), nil
}

// Names is the h= tag of the block: its field names in order, and "from" once
// more, so that no second From can be added without breaking the signature
// (RFC 6376 §8.15).
func (b *Block) Names() string {
	names := make([]string, 0, len(b.Fields)+1)
	for _, f := range b.Fields {
		names = append(names, f.Name)
	}
	return strings.Join(append(names, "from"), ":")
}

// Params are the tags of one signature.
type Params struct {
	Alg, Domain, Selector string
	BodyHash              string // bh=
	Time                  int64  // t=, unix seconds
}

// Unsigned is the DKIM-Signature header value of p over b with an empty b= tag
// (the last tag), folded so that no line passes 78 characters.
func Unsigned(p Params, b *Block) string {
	tags := []string{"v=1", "a=" + p.Alg, "c=relaxed/relaxed", "d=" + p.Domain, "s=" + p.Selector, fmt.Sprintf("t=%d", p.Time),
		"h=" + b.Names(), "bh=" + p.BodyHash}
	var s strings.Builder
	line := len("DKIM-Signature: ")
	for _, t := range tags {
		t += ";"
		if line+len(t)+1 > 78 {
			s.WriteString("\r\n ")
			line = 1
		} else if s.Len() > 0 {
			s.WriteString(" ")
			line++
		}
		// A long h= list folds after its colons (RFC 6376 §3.5 allows FWS
		// there), so that no line passes 998 bytes whatever is signed.
		for len(t) > 78-line {
			i := strings.LastIndexByte(t[:78-line], ':')
			if i < 0 {
				break
			}
			s.WriteString(t[:i+1] + "\r\n ")
			t, line = t[i+1:], 1
		}
		s.WriteString(t)
		line += len(t)
	}
	return s.String() + "\r\n b="
}

// Signed is unsigned with the signature in its b= tag, folded in lines of 72.
func Signed(unsigned string, sig []byte) string {
	enc := base64.StdEncoding.EncodeToString(sig)
	var s strings.Builder
	s.WriteString(unsigned)
	for len(enc) > 72 {
		s.WriteString(enc[:72] + "\r\n  ")
		enc = enc[72:]
	}
	s.WriteString(enc)
	return s.String()
}

// Digest is SHA-256 of what a signature covers (RFC 6376 §3.7): the block,
// then the DKIM-Signature field itself with an empty b=, canonical, without
// its CRLF. Ed25519 (RFC 8463) and RSA-SHA256 both sign this digest.
func Digest(b *Block, unsigned string) [32]byte {
	return sha256.Sum256([]byte(b.Raw + RelaxedHeader("DKIM-Signature: "+unsigned)))
}

// ValidBodyHash reports whether s is a bh= tag: base64 of a SHA-256 digest.
func ValidBodyHash(s string) bool {
	d, err := base64.StdEncoding.DecodeString(s)
	return err == nil && len(d) == sha256.Size
}
