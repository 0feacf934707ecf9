package mailread

import (
	"bytes"
	"io"
	"mime"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // the usual charsets of real mail
	"github.com/emersion/go-message/mail"
	"golang.org/x/net/html"
)

// Message is what email_get returns: a raw message parsed by the daemon.
// Attachments are described, never returned.
type Message struct {
	ID          string       `json:"id"`
	From        string       `json:"from"`
	To          []string     `json:"to,omitempty"`
	Cc          []string     `json:"cc,omitempty"`
	Subject     string       `json:"subject"`
	Date        string       `json:"date,omitempty"` // RFC 3339, as the sender claims
	MessageID   string       `json:"message_id,omitempty"`
	Headers     []Header     `json:"headers"`
	Text        string       `json:"text,omitempty"`      // the text/plain body
	HTMLText    string       `json:"html_text,omitempty"` // the text/html body rendered to text
	Links       []string     `json:"links,omitempty"`     // http(s) links of the HTML body, in order
	Attachments []Attachment `json:"attachments,omitempty"`
	// Auth is the verdict the mail edge recorded in Authentication-Results
	// (SPF, DKIM, DMARC), "" when the message has none.
	Auth      string   `json:"authentication_results,omitempty"`
	Truncated bool     `json:"truncated,omitempty"` // a body or a list was cut at its bound
	Seen      bool     `json:"seen,omitempty"`
	Labels    []string `json:"labels,omitempty"`
}

// Header is one header field, decoded (RFC 2047) where it can be.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Attachment describes one attachment (its bytes stay in the message).
type Attachment struct {
	Filename    string `json:"filename,omitempty"`
	ContentType string `json:"content_type"`
	Size        int64  `json:"size"`
}

// Bounds of what Parse returns.
const (
	maxBody        = 256 << 10 // bytes of text and of rendered HTML
	maxParts       = 200
	maxHeaders     = 200
	maxHeaderValue = 4096
	maxLinks       = 100
)

// Parse parses a raw message, whatever the sender wrote: a message whose
// body does not parse returns its headers and what was read before the
// damage, one whose header does not parse (or is over go-message's bounds)
// nothing; either is marked Truncated.
func Parse(id string, raw []byte) *Message {
	m := &Message{ID: id, Headers: []Header{}}
	e, err := message.Read(bytes.NewReader(raw))
	if e == nil || err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		m.Truncated = true
		return m
	}
	h := mail.Header{Header: e.Header}
	if from, err := h.AddressList("From"); err == nil && len(from) > 0 {
		m.From = from[0].Address
	} else {
		m.From = clean(h.Get("From"))
	}
	m.To = addresses(h, "To")
	m.Cc = addresses(h, "Cc")
	m.Subject, _ = h.Subject()
	m.Subject = clean(m.Subject)
	if d, err := h.Date(); err == nil && !d.IsZero() {
		m.Date = d.UTC().Format("2006-01-02T15:04:05Z07:00")
	}
	m.MessageID, _ = h.MessageID()
	m.MessageID = clean(m.MessageID)
	dec := mime.WordDecoder{CharsetReader: message.CharsetReader}
	for f := h.Fields(); f.Next(); {
		if len(m.Headers) == maxHeaders {
			m.Truncated = true
			break
		}
		v, err := dec.DecodeHeader(f.Value())
		if err != nil {
			v = f.Value()
		}
		v = clean(v)
		if len(v) > maxHeaderValue {
			v, m.Truncated = v[:maxHeaderValue], true
		}
		m.Headers = append(m.Headers, Header{Name: f.Key(), Value: v})
		// the edge prepends its verdict: the first one is ours, later ones the sender's
		if m.Auth == "" && strings.EqualFold(f.Key(), "Authentication-Results") {
			m.Auth = v
		}
	}
	w := walker{m: m}
	w.walk(e, 0)
	m.Text, m.HTMLText = w.text.String(), w.html.String()
	return m
}

// walker walks a message's parts depth first, at most maxDepth multiparts
// deep: go-message's multipart reader pays for every enclosing level on every
// byte, so an unbounded depth would let a sender make the daemon spin.
type walker struct {
	m          *Message
	text, html strings.Builder
	parts      int
}

// maxDepth bounds the nesting of multiparts the daemon reads (real mail
// nests a few deep: mixed > alternative > related).
const maxDepth = 16

func (w *walker) walk(e *message.Entity, depth int) {
	m := w.m
	if mr := e.MultipartReader(); mr != nil {
		if depth == maxDepth {
			m.Truncated = true
			return
		}
		for w.parts < maxParts {
			p, err := mr.NextPart()
			if err == io.EOF {
				return
			}
			if err != nil && (p == nil || !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err)) {
				m.Truncated = true // a damaged part ends the walk; what came before stands
				return
			}
			w.walk(p, depth+1)
		}
		m.Truncated = true
		return
	}
	w.parts++
	ct, _, _ := e.Header.ContentType()
	if disp, _, _ := e.Header.ContentDisposition(); disp == "attachment" {
		name, _ := (&mail.AttachmentHeader{Header: e.Header}).Filename()
		m.Attachments = append(m.Attachments, Attachment{Filename: clean(name), ContentType: ct, Size: size(e.Body)})
		return
	}
	switch ct {
	case "text/html":
		b, cut := readBounded(e.Body, maxBody)
		m.Truncated = m.Truncated || cut
		t, links := RenderHTML(b)
		appendBounded(&w.html, t, &m.Truncated)
		for _, l := range links {
			if len(m.Links) < maxLinks {
				m.Links = append(m.Links, l)
			}
		}
	case "text/plain", "":
		b, cut := readBounded(e.Body, maxBody)
		m.Truncated = m.Truncated || cut
		appendBounded(&w.text, clean(string(b)), &m.Truncated)
	default:
		m.Attachments = append(m.Attachments, Attachment{ContentType: ct, Size: size(e.Body)})
	}
}

func addresses(h mail.Header, key string) []string {
	l, err := h.AddressList(key)
	if err != nil {
		if v := clean(h.Get(key)); v != "" {
			return []string{v}
		}
		return nil
	}
	var out []string
	for _, a := range l {
		if len(out) == 50 {
			break
		}
		out = append(out, a.Address)
	}
	return out
}

// readBounded reads at most n bytes of r; cut is true if r had more (the
// rest is drained, bounded by the message's size).
func readBounded(r io.Reader, n int64) (b []byte, cut bool) {
	b, err := io.ReadAll(io.LimitReader(r, n))
	if err != nil && len(b) == 0 {
		return nil, true
	}
	more, _ := io.Copy(io.Discard, r)
	return b, more > 0 || err != nil
}

func size(r io.Reader) int64 {
	n, _ := io.Copy(io.Discard, r)
	return n
}

func appendBounded(b *strings.Builder, s string, cut *bool) {
	if b.Len() > 0 && s != "" {
		b.WriteString("\n")
	}
	if room := maxBody - b.Len(); len(s) > room {
		s, *cut = s[:max(room, 0)], true
	}
	b.WriteString(s)
}

// clean makes s valid UTF-8 without NULs or other control characters but
// newlines and tabs.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\t' || r >= 0x20 && r != 0x7f && !(r >= 0x80 && r < 0xa0) {
			return r
		}
		if r == '\r' {
			return -1
		}
		return ' '
	}, s)
}

// skipped are the elements whose content is not text a reader sees.
var skipped = map[string]bool{"script": true, "style": true, "head": true, "noscript": true, "template": true, "svg": true, "iframe": true, "object": true}

// blocks end a line.
var blocks = map[string]bool{"p": true, "div": true, "br": true, "tr": true, "li": true, "h1": true, "h2": true, "h3": true,
	"h4": true, "h5": true, "h6": true, "table": true, "section": true, "blockquote": true, "pre": true, "hr": true, "td": true}

// RenderHTML renders an HTML body to the text a reader sees: no markup, no
// CSS (style elements and attributes are dropped, so a colour like #123456 is
// not text), no script; entities decoded; whitespace collapsed. It also
// returns the http(s) links of <a href>, in order.
func RenderHTML(b []byte) (string, []string) {
	z := html.NewTokenizer(bytes.NewReader(b))
	z.SetMaxBuf(maxBody)
	var out strings.Builder
	var links []string
	skip := 0
	space := false
	nl := func() {
		s := out.String()
		if len(s) > 0 && !strings.HasSuffix(s, "\n") {
			out.WriteString("\n")
		}
		space = false
	}
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return strings.TrimSpace(out.String()), links
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, hasAttr := z.TagName()
			tag := string(name)
			if skipped[tag] && tt == html.StartTagToken {
				skip++
			} else if skipped[tag] && tt == html.EndTagToken && skip > 0 {
				skip--
			}
			if blocks[tag] {
				nl()
			} else if tag == "td" || tag == "th" {
				space = true
			}
			if tag == "a" && hasAttr && tt != html.EndTagToken && len(links) < maxLinks {
				for {
					k, v, more := z.TagAttr()
					if string(k) == "href" {
						if u := httpLink(string(v)); u != "" {
							links = append(links, u)
						}
					}
					if !more {
						break
					}
				}
			}
		case html.TextToken:
			if skip > 0 {
				continue
			}
			t := string(z.Text())
			if t == "" {
				continue
			}
			if r, _ := utf8.DecodeRuneInString(t); isSpace(r) {
				space = true
			}
			fields := strings.FieldsFunc(t, isSpace)
			for i, f := range fields {
				if s := out.String(); (i > 0 || space) && s != "" && !strings.HasSuffix(s, "\n") {
					out.WriteString(" ")
				}
				out.WriteString(clean(f))
			}
			r, _ := utf8.DecodeLastRuneInString(t)
			space = isSpace(r) || len(fields) == 0
		}
		if out.Len() > maxBody {
			return strings.TrimSpace(out.String()[:maxBody]), links
		}
	}
}

func isSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f' || r == '\u00a0'
}

// httpLink is s if it is an absolute http(s) URL with a host, else "".
func httpLink(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 2048 {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return ""
	}
	return u.String()
}
