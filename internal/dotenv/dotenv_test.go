package dotenv

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	in := "# comment\n\n  export A=plain value # kept\r\nB = 'it''s'\nB2='single \\n literal'\nC=\"q \\\"x\\\" \\n\\t\\\\ \\z\" # after\n_D=\nE=x=y\n"
	got, err := Parse(strings.NewReader(strings.Replace(in, "B = 'it''s'\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{3, "A", []byte("plain value # kept")}, {4, "B2", []byte(`single \n literal`)},
		{5, "C", []byte("q \"x\" \n\t\\ \\z")}, {6, "_D", []byte{}}, {7, "E", []byte("x=y")}}
	if len(got) != len(want) {
		t.Fatalf("got %d entries: %+v", len(got), got)
	}
	for i := range want {
		if got[i].Line != want[i].Line || got[i].Name != want[i].Name || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Errorf("entry %d: got %+v %q, want %+v %q", i, got[i], got[i].Value, want[i], want[i].Value)
		}
	}
}

// TestParseErrorsHideValues: every malformed line is refused by number, and the
// error holds nothing of the line (the secret is in each).
func TestParseErrorsHideValues(t *testing.T) {
	const secret = "s3cr3t-v4lue-XYZ"
	for _, c := range []struct {
		in   string
		line int
	}{
		{"A=1\n" + secret + "\n", 2},
		{"A B=" + secret + "\n", 1},
		{"1A=" + secret + "\n", 1},
		{"A='" + secret + "\n", 1},
		{"A=\"" + secret + "\\\"\n", 1},
		{"A='" + secret + "' trailing" + secret + "\n", 1},
		{"A=" + secret + "\n\n# c\nA=" + secret + "\n", 4},
		{"-" + secret + "=x\n", 1},
	} {
		_, err := Parse(strings.NewReader(c.in))
		var le *LineError
		if !errors.As(err, &le) || le.Line != c.line {
			t.Errorf("%q: got %v, want an error on line %d", c.in, err, c.line)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("%q: the error shows the value: %v", c.in, err)
		}
	}
	if _, err := Parse(strings.NewReader(strings.Repeat("A", MaxSize+1))); err == nil {
		t.Error("a file over MaxSize was read")
	}
}

// FuzzParse: Parse never panics, every entry has a valid unique name and a
// one-line value, and an error never repeats any line's text.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"A=1\nB='x'\nC=\"y\\n\"\n", "export A = b\r\n# c\n", "A=\"unclosed\n", "A B=c", "=x", "A='x' y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := Parse(strings.NewReader(in))
		if err != nil {
			var le *LineError
			if errors.As(err, &le) {
				for _, line := range strings.Split(in, "\n") {
					if l := strings.TrimSpace(line); len(l) >= 12 && strings.Contains(err.Error(), l) {
						t.Fatalf("the error repeats a line: %v", err)
					}
				}
			}
			return
		}
		seen := map[string]bool{}
		for _, e := range got {
			if !validName(e.Name) || seen[e.Name] || e.Line < 1 {
				t.Fatalf("entry %+v", e)
			}
			seen[e.Name] = true
		}
	})
}
