// Package dotenv parses .env files: one NAME=VALUE per line, as `agentkeys
// import` and `agentkeys run --env-file` read them. Values are secrets: no error
// of this package contains any part of a line, only its number and what is
// wrong with it.
//
// The format: blank lines and lines starting with '#' are skipped; a line may
// start with "export "; NAME is a letter or '_' then letters, digits or '_';
// spaces around NAME and '=' are ignored. VALUE is the rest of the line with
// surrounding spaces removed (a '#' in it is part of the value), or a quoted
// string ending the line: '…' taken literally, "…" with the escapes \n \r \t \"
// and \\. Values span one line; a NAME appears once.
package dotenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
)

// MaxSize is the largest file Parse reads.
const MaxSize = 1 << 20

// Entry is one NAME=VALUE line.
type Entry struct {
	Line  int
	Name  string
	Value []byte
}

// LineError is a line that is not NAME=VALUE. It never holds the line's text.
type LineError struct {
	Line   int
	Reason string
}

func (e *LineError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Reason) }

// Parse reads every entry of r, or stops at the first malformed line.
func Parse(r io.Reader) ([]Entry, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("the file is larger than %d bytes", MaxSize)
	}
	var out []Entry
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), MaxSize)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		line = bytes.TrimLeft(bytes.TrimPrefix(line, []byte("export ")), " \t")
		name, value, ok := bytes.Cut(line, []byte("="))
		if !ok {
			return nil, &LineError{n, "not NAME=VALUE (no '=')"}
		}
		nm := string(bytes.TrimSpace(name))
		if !validName(nm) {
			return nil, &LineError{n, "the name before '=' must be a letter or '_' followed by letters, digits or '_'"}
		}
		if first, dup := seen[nm]; dup {
			return nil, &LineError{n, fmt.Sprintf("%s is already set on line %d", nm, first)}
		}
		v, err := unquote(bytes.TrimSpace(value))
		if err != "" {
			return nil, &LineError{n, err}
		}
		seen[nm] = n
		out = append(out, Entry{Line: n, Name: nm, Value: v})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// unquote returns a value without its quotes, or why it is malformed.
func unquote(v []byte) ([]byte, string) {
	if len(v) == 0 || (v[0] != '\'' && v[0] != '"') {
		return bytes.Clone(v), ""
	}
	q := v[0]
	var out []byte
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == q:
			if rest := bytes.TrimSpace(v[i+1:]); len(rest) != 0 && rest[0] != '#' {
				return nil, "text after the closing quote"
			}
			return out, ""
		case c == '\\' && q == '"' && i+1 < len(v):
			i++
			switch v[i] {
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case '"', '\\':
				out = append(out, v[i])
			default:
				out = append(out, '\\', v[i])
			}
		default:
			out = append(out, c)
		}
	}
	return nil, "the quoted value has no closing quote on its line"
}
