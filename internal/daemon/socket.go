package daemon

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// Handler serves the daemon's operations over HTTP: GET /credentials and
// GET /credentials/{service}[?wait=SECONDS] (wait for the owner's approval, at
// most MaxWaitSeconds), GET /cloud/aws, the email routes (mailReadRoutes), POST
// /mail/send (mailsend_mcp.go) and GET /metrics (the daemon's counters, e.g.
// agentkeys_oidc_dual_verify_rejected_total); errors are {"error":{"code","message","fix"}}.
func Handler(src Source, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	fail := func(w http.ResponseWriter, p *problem.Error) {
		if p.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(p.RetryAfter))
		}
		writeJSON(w, statusOf(p.Code), map[string]*problem.Error{"error": p})
	}
	mux.HandleFunc("GET /credentials", func(w http.ResponseWriter, r *http.Request) {
		l, err := src.List(r.Context())
		if err != nil {
			p := Stable(err)
			log.Info("list refused", "code", p.Code)
			fail(w, p)
			return
		}
		writeJSON(w, http.StatusOK, l)
	})
	mux.HandleFunc("GET /credentials/{service}", func(w http.ResponseWriter, r *http.Request) {
		svc := r.PathValue("service")
		wait, err := strconv.Atoi(cmp.Or(r.URL.Query().Get("wait"), "0"))
		if err != nil || checkWait(wait) != nil {
			fail(w, errBadWait)
			return
		}
		v, err := src.Get(r.Context(), svc, Wait{For: time.Duration(wait) * time.Second})
		if err != nil {
			p := Stable(err)
			log.Info("credential refused", "service", Loggable(svc), "code", p.Code)
			fail(w, p)
			return
		}
		defer clear(v)
		log.Info("credential served", "service", svc, "bytes", len(v))
		writeJSON(w, http.StatusOK, credentialAnswer{Service: svc, Value: string(v)})
	})
	mux.HandleFunc("GET /cloud/aws", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		d, err := strconv.ParseInt(cmp.Or(q.Get("duration"), "0"), 10, 32)
		if err != nil {
			fail(w, problem.New(CodeBadRequest, "duration is not a number of seconds", "pass e.g. duration=3600, or omit it"))
			return
		}
		cr, err := src.AWSCredentials(r.Context(), AWSRequest{RoleARN: q.Get("role_arn"), SessionName: q.Get("session_name"), Duration: int32(d)})
		if err != nil {
			p := Stable(err)
			log.Info("cloud credentials refused", "code", p.Code)
			fail(w, p)
			return
		}
		writeJSON(w, http.StatusOK, cr)
	})
	mux.HandleFunc("GET /cloud/{provider}", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		d, err := strconv.ParseInt(cmp.Or(q.Get("duration"), "0"), 10, 32)
		if err != nil {
			fail(w, problem.New(CodeBadRequest, "duration is not a number of seconds", "pass e.g. duration=3600, or omit it"))
			return
		}
		ct, err := src.CloudToken(r.Context(), CloudRequest{Provider: r.PathValue("provider"), Audience: q.Get("audience"),
			ServiceAccount: q.Get("service_account"), ClientID: q.Get("client_id"), TenantID: q.Get("tenant_id"), Scope: q.Get("scope"),
			RoleARN: q.Get("role_arn"), OIDCProviderARN: q.Get("oidc_provider_arn"), SessionName: q.Get("session_name"), Duration: int32(d)})
		if err != nil {
			p := Stable(err)
			log.Info("cloud credentials refused", "code", p.Code)
			fail(w, p)
			return
		}
		writeJSON(w, http.StatusOK, ct)
	})
	handleMailSend(mux, src, log)
	mailReadRoutes(mux, src, log, fail)
	mux.Handle("GET /metrics", promhttp.HandlerFor(Metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fail(w, problem.New(CodeNotFound, "no such endpoint", "use GET /credentials, GET /credentials/{service}[?wait=SECONDS], GET /cloud/aws?role_arn=ARN, GET /cloud/{gcp,azure,alicloud}?…, GET /email, GET /email/{id}, GET /email/code, POST /email/{id}/mark or POST /mail/send"))
	})
	return mux
}

// credentialAnswer is the answer of GET /credentials/{service}.
type credentialAnswer struct {
	Service string `json:"service"`
	Value   string `json:"value"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// ListenSocket creates a Unix socket at path for this user only (0600) or, with
// group, for this user and that group (0660, the socket's group set to group):
// the separated deployment, where the daemon runs as its own user and the
// agent's user reaches it through its group. It never makes a socket every user
// may use, and refuses a directory others may write without the sticky bit
// (anyone could replace the socket there). A stale socket file is replaced; any
// other file is not.
func ListenSocket(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			g, err = user.LookupGroupId(group)
		}
		if err != nil {
			return nil, problem.Newf(problem.BadRequest, "name the agent user's group (id -gn AGENT_USER)", "--socket-group %q: no such group", group)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return nil, problem.Newf(problem.BadRequest, "put the socket in a directory only the daemon's user may write, e.g. /run/agentkeys",
			"every user may write %s, so anyone could replace the socket", dir)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, problem.Newf(problem.BadRequest, "choose another --socket path", "%s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, problem.Newf(problem.Conflict, "stop the other daemon or choose another --socket path", "a daemon already serves %s", path)
		}
		os.Remove(path)
	}
	// Bound and made ready under a temporary name, then renamed into place: the
	// socket appears at path only once it accepts connections, with its final
	// owner and mode (a client that sees it never gets "connection refused").
	// The temporary name is in a new 0700 directory, so until the socket has
	// its mode no other user can reach it, whatever the umask (which a library
	// must not change: it is process-wide).
	priv, err := os.MkdirTemp(dir, ".ak-")
	if err != nil {
		return nil, problem.Newf(problem.BadRequest, "choose a writable --socket path", "cannot listen on %s: %v", path, err)
	}
	defer os.RemoveAll(priv) // empty once the socket is renamed out of it
	tmp := filepath.Join(priv, "s")
	ln, err := net.Listen("unix", tmp)
	if err != nil {
		return nil, problem.Wrap(err, problem.BadRequest, "choose a writable --socket path", "cannot listen on %s: %v", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		ln.Close()
		return nil, err
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(problem.Newf(problem.Denied, "make the daemon's user a member of "+group+" (usermod -aG "+group+" DAEMON_USER) and start it again",
				"cannot give the socket to group %s: %v", group, err))
		}
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(problem.Wrap(err, problem.BadRequest, "choose a writable --socket path", "cannot listen on %s: %v", path, err))
	}
	return socketListener{ln, path}, nil
}

// socketListener removes its socket file when closed, as a listener bound to
// the path itself would.
type socketListener struct {
	net.Listener
	path string
}

func (l socketListener) Close() error {
	os.Remove(l.path)
	return l.Listener.Close()
}

// ServeSocket serves Handler on ln until ctx ends; it returns once the
// requests in flight are answered (or after 5 s).
func ServeSocket(ctx context.Context, ln net.Listener, src Source, log *slog.Logger) error {
	return serveHandler(ctx, ln, Handler(src, log))
}

func serveHandler(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	served, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
		case <-served: // Serve failed on its own: nothing to shut down
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	// Serve returns as soon as Shutdown closes the listener; Shutdown returns
	// when the requests in flight are done.
	err := srv.Serve(ln)
	close(served)
	<-stopped
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving the socket: %w", err)
}
