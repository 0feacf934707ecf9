package mailread_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/mailread/mailreadtest"
)

// FuzzParse feeds the daemon's MIME handling (Parse, then FindCode) what any
// sender may put in a message: it never panics, answers valid UTF-8 within
// its bounds, and never returns an attachment's bytes.
func FuzzParse(f *testing.F) {
	f.Add(mailreadtest.Message("a@s.test", "Your code", "Your code is 482913"))
	f.Add(htmlMail("Verify", "", colourful))
	f.Add(htmlMail("=?utf-8?b?w6k=?=", "text part 1234", `<a href="https://x.test/verify?t=1">go</a><script>var a=123456</script>`))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"))
	f.Add([]byte("Content-Type: text/plain; charset=x-unknown\r\nContent-Transfer-Encoding: x-weird\r\n\r\n\xff\xfe 1234"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := mailread.Parse("1.1", raw)
		for _, s := range []string{m.From, m.Subject, m.Text, m.HTMLText, m.Auth} {
			if !utf8.ValidString(s) {
				t.Fatalf("not UTF-8: %q", s)
			}
		}
		if len(m.Text) > 256<<10 || len(m.HTMLText) > 256<<10 || len(m.Links) > 100 || len(m.Headers) > 200 {
			t.Fatalf("over the bounds: %d %d %d %d", len(m.Text), len(m.HTMLText), len(m.Links), len(m.Headers))
		}
		f := mailread.FindCode(m)
		if f.Code != "" && !strings.Contains(m.Subject+"\n"+m.Text+m.HTMLText, f.Code) {
			t.Fatalf("code %q is not in the message", f.Code)
		}
		if txt, _ := mailread.RenderHTML(raw); !utf8.ValidString(txt) {
			t.Fatalf("rendered HTML is not UTF-8: %q", txt)
		}
	})
}
