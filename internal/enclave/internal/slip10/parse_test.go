package slip10

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePathRejects(t *testing.T) {
	tooMany := strings.TrimSuffix(strings.Repeat("a/", MaxPathSegments+1), "/")
	cases := []struct {
		name, path, wantInErr string
	}{
		{"empty", "", "path is empty"},
		{"leading slash", "/oidc/issuer/v1", `starts with "/"`},
		{"only slash", "/", `starts with "/"`},
		{"trailing slash", "oidc/issuer/v1/", `ends with "/"`},
		{"empty segment", "oidc//v1", "segment 2: segment is empty"},
		{"too many segments", tooMany, "17 segments, more than the maximum of 16"},
		{"segment too long", "oidc/" + strings.Repeat("x", MaxSegmentLen+1) + "/v1", "segment 2: segment is 129 bytes"},
		{"whole path too long", strings.Repeat("x", 3000), "path is 3000 bytes"},
		{"space", "oidc/my issuer/v1", `segment 2: byte 2 (" ") is not allowed`},
		{"apostrophe hardened marker", "oidc/0'/v1", `byte 1 ("'") is not allowed`},
		{"backslash", `oidc\issuer`, `byte 4 ("\\") is not allowed`},
		{"plus", "a+b", `("+") is not allowed`},
		{"non-ASCII", "wallet/é/v1", `byte 0 ("\xc3") is not allowed`},
		{"NUL", "v1\x00", `byte 2 ("\x00") is not allowed`},
		{"newline", "v1\n", `("\n") is not allowed`},
		{"BIP-32 m prefix", "m/44H/60H", `BIP-32 style "m/" prefix`},
		{"BIP-32 M prefix", "M/0", `BIP-32 style "m/" prefix`},
		{"bare m", "m", `BIP-32 style "m/" prefix`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePath(tc.path)
			if err == nil {
				t.Fatalf("ParsePath(%q) = %x, want error", tc.path, got)
			}
			if !errors.Is(err, ErrInvalidPath) {
				t.Errorf("error %v does not wrap ErrInvalidPath", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantInErr) {
				t.Errorf("error %q does not mention %q", msg, tc.wantInErr)
			}
			if !strings.Contains(msg, `e.g. "oidc/issuer/v1"`) {
				t.Errorf("error %q does not show a valid example", msg)
			}
			if _, err := DeriveString(Ed25519, testSeed(), tc.path); !errors.Is(err, ErrInvalidPath) {
				t.Errorf("DeriveString(%q) error = %v, want ErrInvalidPath", tc.path, err)
			}
		})
	}
}

func TestParsePathAccepts(t *testing.T) {
	maxSeg := strings.Repeat("z", MaxSegmentLen)
	sixteen := strings.TrimSuffix(strings.Repeat(maxSeg+"/", MaxPathSegments), "/")
	cases := []string{
		"v1",
		"oidc/issuer/v1",
		"dkim/mail.example.com/v1",
		walletPath,
		"user@example.com/key:1/A-b_c.d",
		"mm/v1",
		"a/m/b",
		"0",
		maxSeg,
		sixteen,
	}
	for _, path := range cases {
		got, err := ParsePath(path)
		if err != nil {
			t.Errorf("ParsePath(%q): %v", path, err)
			continue
		}
		segs := strings.Split(path, "/")
		if len(got) != len(segs) {
			t.Errorf("ParsePath(%q) returned %d indexes, want %d", path, len(got), len(segs))
			continue
		}
		for i, seg := range segs {
			if got[i] != Index(seg) {
				t.Errorf("ParsePath(%q)[%d] = %08x, want Index(%q) = %08x", path, i, got[i], seg, Index(seg))
			}
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"oidc/issuer/v1", "dkim/mail.example.com/v1", walletPath, "", "/", "a//b",
		"m/0H/1", "v1/", "a b", "é", strings.Repeat("a/", 20), strings.Repeat("x", 200),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		indexes, err := ParsePath(path)
		if err != nil {
			if !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("ParsePath(%q) error %v does not wrap ErrInvalidPath", path, err)
			}
			return
		}
		segs := strings.Split(path, "/")
		if strings.Join(segs, "/") != path {
			t.Fatalf("segments of %q do not join back to the input", path)
		}
		if len(indexes) != len(segs) || len(segs) > MaxPathSegments {
			t.Fatalf("ParsePath(%q): %d indexes for %d segments", path, len(indexes), len(segs))
		}
		for i, seg := range segs {
			if seg == "" || len(seg) > MaxSegmentLen || strings.Trim(seg, validChars) != "" {
				t.Fatalf("ParsePath(%q) accepted invalid segment %q", path, seg)
			}
			if indexes[i]&Hardened == 0 || indexes[i] != Index(seg) {
				t.Fatalf("ParsePath(%q)[%d] = %08x, want hardened Index(%q)", path, i, indexes[i], seg)
			}
		}
		if segs[0] == "m" || segs[0] == "M" {
			t.Fatalf("ParsePath(%q) accepted a BIP-32 style path", path)
		}
	})
}

// validChars is the allowed segment alphabet, spelled out independently of
// segmentByte for the fuzz oracle.
const validChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-"
