package mailread

import (
	"net/url"
	"regexp"
	"strings"
)

// Found is a one-time code or a magic link found in a message.
type Found struct {
	Code string `json:"code,omitempty"`
	Link string `json:"link,omitempty"`
}

// Empty reports whether nothing was found.
func (f Found) Empty() bool { return f.Code == "" && f.Link == "" }

var (
	// a run of 4 to 8 digits that is a word of its own: not part of a longer
	// number, a word, a colour (#123456), an amount or a date
	digitsRE = regexp.MustCompile(`[0-9]{4,8}`)
	// an alphanumeric code: letters and digits (both), optionally in groups
	// joined by '-', e.g. X7K-9P2 or A1B2C3
	alnumRE = regexp.MustCompile(`[A-Za-z0-9]{2,10}(-[A-Za-z0-9]{2,10}){0,3}`)
	// what announces a code
	codeWordRE = regexp.MustCompile(`(?i)\b(code|otp|passcode|pin|one[- ]time|verification|verify|security|confirmation|token)\b`)
	urlRE      = regexp.MustCompile(`https?://[^\s<>"'()\[\]]+`)
	// what a magic link's URL or text says
	linkWordRE = regexp.MustCompile(`(?i)(verify|verification|confirm|activate|magic|log-?in|sign-?in|signin|auth|token|validate|reset|otp|code)`)
	noLinkRE   = regexp.MustCompile(`(?i)(unsubscribe|preferences|privacy|terms|help|support|optout|opt-out)`)
)

// near is how many bytes after a code word a code may start.
const near = 60

// FindCode finds the one-time code or magic link of a message: a code is 4 to
// 8 digits, or letters and digits mixed, standing alone; one near a word like
// "code" wins, then a lone 6-digit number, then other lone numbers. The HTML
// body is searched as rendered text (RenderHTML drops CSS), so #123456 in a
// style is never a code; the subject is searched with the body. A link is an http(s)
// link whose URL says verify, confirm, login, magic, token….
func FindCode(m *Message) Found {
	body := m.Text
	if strings.TrimSpace(body) == "" {
		body = m.HTMLText
	}
	f := Found{Code: codeIn(m.Subject + "\n" + body)}
	links := m.Links
	if len(links) == 0 || strings.TrimSpace(m.Text) != "" {
		links = append(links, urlRE.FindAllString(body, maxLinks)...)
	}
	for _, l := range links {
		l = strings.TrimRight(l, ".,;:!?")
		u, err := url.Parse(l)
		if err != nil || u.Host == "" {
			continue
		}
		if linkWordRE.MatchString(u.Path+"?"+u.RawQuery) && !noLinkRE.MatchString(u.Path) {
			f.Link = l
			break
		}
	}
	return f
}

// codeIn returns the best code in s, or "".
func codeIn(s string) string {
	// 1. right after a code word: digits, or a mixed alphanumeric code
	for _, w := range codeWordRE.FindAllStringIndex(s, -1) {
		window := s[w[1]:min(len(s), w[1]+near)]
		if d := loneDigits(window, w[1], s); d != "" {
			return d
		}
		for _, loc := range alnumRE.FindAllStringIndex(window, -1) {
			c := window[loc[0]:loc[1]]
			if alone(s, w[1]+loc[0], w[1]+loc[1]) && mixed(c) && len(strings.ReplaceAll(c, "-", "")) >= 4 && !codeWordRE.MatchString(c) {
				return c
			}
		}
	}
	// 2. a lone 6-digit number anywhere, then any lone 4-8 digits but years
	var other string
	for _, loc := range digitsRE.FindAllStringIndex(s, -1) {
		if !alone(s, loc[0], loc[1]) {
			continue
		}
		d := s[loc[0]:loc[1]]
		if len(d) == 6 {
			return d
		}
		if other == "" && !year(d) {
			other = d
		}
	}
	return other
}

// loneDigits is the lone run of 4 to 8 digits in window (which starts at off
// in s): the first of 6 digits, else the first other that is not a year.
func loneDigits(window string, off int, s string) string {
	var other string
	for _, loc := range digitsRE.FindAllStringIndex(window, -1) {
		if !alone(s, off+loc[0], off+loc[1]) {
			continue
		}
		d := window[loc[0]:loc[1]]
		if len(d) == 6 {
			return d
		}
		if other == "" && !year(d) {
			other = d
		}
	}
	return other
}

func year(d string) bool { return len(d) == 4 && (d[:2] == "19" || d[:2] == "20") }

// alone reports whether s[i:j] stands alone: no letter, digit, '#', '$', '€',
// '£', '/', '-', '.' or ',' joined to it before (a colour, an amount, a date,
// a longer number), and no letter, digit, '%', '/' or a digit after '.', ','
// or ':' after it (a decimal, a time, a percentage).
func alone(s string, i, j int) bool {
	if i > 0 {
		c := s[i-1]
		if isAlnum(c) || strings.IndexByte("#$/-.,:_&+=@", c) >= 0 || strings.HasSuffix(s[:i], "€") || strings.HasSuffix(s[:i], "£") {
			return false
		}
	}
	if j < len(s) {
		c := s[j]
		if isAlnum(c) || strings.IndexByte("%/_@-", c) >= 0 {
			return false
		}
		if strings.IndexByte(".,:", c) >= 0 && j+1 < len(s) && isAlnum(s[j+1]) {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// mixed reports whether c has both a letter and a digit, or is all upper
// case letters and digits with a digit (codes are not words).
func mixed(c string) bool {
	var letter, digit bool
	for i := 0; i < len(c); i++ {
		switch {
		case c[i] >= '0' && c[i] <= '9':
			digit = true
		case isAlnum(c[i]):
			letter = true
		}
	}
	return letter && digit
}
