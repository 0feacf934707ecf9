// Package console is the owner's console: a small web UI that `agentkeys
// console` serves on loopback from the owner's own machine. It renders
// server-side pages (html/template, assets embedded) and acts through package
// client with the owner's session and identity key, exactly as the CLI does:
// decisions are signed and secrets sealed in this process, and the broker
// grows no web surface of its own.
//
// Only the browser that opened the one-time login URL gets in: the URL's
// token is spent on first use and becomes an HttpOnly, SameSite=Strict
// session cookie, scoped to a random path prefix that every page lives under
// (a browser sends cookies for 127.0.0.1 to every port of it, but this one
// only to URLs under the secret prefix); every state-changing request carries a CSRF token; the Host
// header must be the listen address (DNS rebinding) and an Origin header the
// console's own; a strict Content-Security-Policy allows only the embedded
// script and style sheet.
package console

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"html/template"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/problem"
)

//go:embed assets
var assets embed.FS

// Config is what the console acts with.
type Config struct {
	Session     *client.Session    // the owner's session with the broker
	Server      string             // the broker URL of the owner's session (decisions sign it)
	Omni        string             // the owner's account (secrets are sealed bound to it)
	PlatformKey string             // the pinned platform attestation key (hex)
	Identity    ed25519.PrivateKey // the owner's identity key: signs pair decisions
	Addr        string             // the address the console listens on, host:port, as bound
	Now         func() time.Time
}

// Console is the console's HTTP handler. One browser session at a time: the
// one that spent the login token.
type Console struct {
	cfg   Config
	pages map[string]*template.Template
	base  string // the secret path prefix, "/<random>/": every page and the cookie's Path

	mu           sync.Mutex
	login        string // the one-time login token; "" once spent
	session      string // the session cookie's value; "" until login
	csrf         string // the session's CSRF token
	flash        string // the last change's result, shown once on the next page
	flashProblem *problem.Error
}

const (
	cookieName = "agentkeys_console"
	maxSecret  = 1 << 20        // as agentkeys store reads
	maxForm    = 3<<20 + 64<<10 // a secret of up to 1 MiB (as `store` reads), url-encoded, and the other fields
)

// New makes a console acting with cfg.
func New(cfg Config) (*Console, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	return &Console{cfg: cfg, pages: pages, base: "/" + randomToken()[:32] + "/", login: randomToken()}, nil
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LoginURL is the one-time URL that logs a browser in.
func (c *Console) LoginURL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return "http://" + c.cfg.Addr + c.base + "login?token=" + c.login
}

// CheckListen refuses to serve on an address that is not loopback unless the
// owner named it with --listen (explicit), and always refuses a wildcard or a
// host name: the console must say which one address it is bound to, since the
// Host header is checked against it.
func CheckListen(addr string, explicit bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return problem.Newf(problem.BadRequest, "pass host:port, e.g. --listen 127.0.0.1:0", "--listen %q is not host:port", addr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || ip.IsUnspecified() {
		return problem.Newf(problem.BadRequest, "pass one IP address, e.g. --listen 127.0.0.1:0",
			"--listen %q does not name one IP address; the console listens on exactly one", addr)
	}
	if !ip.IsLoopback() && !explicit {
		return problem.Newf(problem.Denied, "the console listens on loopback; to serve elsewhere, name the address with --listen",
			"refusing to serve the console on non-loopback address %s", host)
	}
	return nil
}

// ServeHTTP checks every request (Host, Origin, session cookie, CSRF token)
// before any page sees it.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'self'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin") // not no-referrer: with it a browser sends "Origin: null" on forms
	h.Set("Cache-Control", "no-store")
	if r.Host != c.cfg.Addr {
		refuse(w, http.StatusMisdirectedRequest, "this console answers only at http://"+c.cfg.Addr)
		return
	}
	origin := r.Header.Get("Origin")
	if origin != "" && origin != "http://"+c.cfg.Addr {
		refuse(w, http.StatusForbidden, "request from another origin refused")
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost {
		refuse(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, c.base)
	if !ok {
		refuse(w, http.StatusNotFound, "no such page: open the login URL that agentkeys console printed")
		return
	}
	path := "/" + rest
	switch path {
	case "/login":
		if r.Method != http.MethodGet {
			refuse(w, http.StatusMethodNotAllowed, "open the login URL in a browser")
			return
		}
		c.serveLogin(w, r)
		return
	case "/static/console.js", "/static/console.css":
		http.ServeFileFS(w, r, assets, "assets"+path)
		return
	}
	csrf, ok := c.sessionCSRF(r)
	if !ok {
		refuse(w, http.StatusUnauthorized, "not logged in: open the login URL that agentkeys console printed (each is good once; restart the console for a new one)")
		return
	}
	if r.Method == http.MethodPost {
		if origin == "" {
			refuse(w, http.StatusForbidden, "a change needs an Origin header")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil { // url-encoded forms only: the pages send nothing else
			refuse(w, http.StatusBadRequest, "the form could not be read (a secret is at most 1 MiB)")
			return
		}
		if subtle.ConstantTimeCompare([]byte(r.PostFormValue("csrf")), []byte(csrf)) != 1 {
			refuse(w, http.StatusForbidden, "the form's CSRF token is wrong: reload the page and try again")
			return
		}
	}
	c.route(w, r, path, csrf)
}

// serveLogin spends the one-time login token for a session cookie.
func (c *Console) serveLogin(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	c.mu.Lock()
	ok := c.login != "" && subtle.ConstantTimeCompare([]byte(token), []byte(c.login)) == 1
	if ok {
		c.login, c.session, c.csrf = "", randomToken(), randomToken()
	}
	session := c.session
	c.mu.Unlock()
	if !ok {
		refuse(w, http.StatusForbidden, "this login URL is wrong or was used already: restart agentkeys console for a new one")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: session, Path: c.base, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, c.base+"agents", http.StatusSeeOther)
}

// sessionCSRF checks the session cookie and returns the session's CSRF token.
func (c *Console) sessionCSRF(r *http.Request) (string, bool) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return "", false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.session)) != 1 {
		return "", false
	}
	return c.csrf, true
}

// refuse answers a request the console does not serve, in plain text.
func refuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	w.Write([]byte(msg + "\n"))
}
