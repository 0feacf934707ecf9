package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"github.com/spf13/cobra"

	"github.com/agentkeys/agentkeys/internal/console"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
)

func consoleCmd(e *env) *cobra.Command {
	var listen string
	var noOpen bool
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Open the owner's console in a browser: agents, pairing, approvals, credentials, activity",
		Long: `Serve the owner's console on this machine (loopback) until Ctrl-C. It acts with
this machine's owner session and identity key, as the other commands do: pair
decisions are signed and secrets sealed here, not in the broker.

It prints a one-time login URL (and opens it in a browser unless --no-open): the
first browser to open it gets the session; the URL does not work twice. Restart
the console for a new one. --listen takes one IP address and port; an address
that is not loopback is served only when --listen names it.`,
		Example: "  agentkeys console\n  agentkeys console --no-open\n  agentkeys console --listen 127.0.0.1:8091 --no-open",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := console.CheckListen(listen, cmd.Flags().Changed("listen")); err != nil {
				return err
			}
			s, c, err := e.ownerSession()
			if err != nil {
				return err
			}
			d, err := e.dir()
			if err != nil {
				return err
			}
			key, err := d.Identity()
			if errors.Is(err, home.ErrMissing) {
				return problem.New(problem.Denied, "this machine has no owner identity key to sign decisions", "run agentkeys init on the owner's machine")
			} else if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return problem.Wrap(err, problem.BadRequest, "choose a free address with --listen, e.g. --listen 127.0.0.1:0", "cannot listen on %s: %v", listen, err)
			}
			con, err := console.New(console.Config{Session: c, Server: s.Server, Omni: s.Omni, PlatformKey: s.PlatformKey,
				Identity: key, Addr: ln.Addr().String()})
			if err != nil {
				ln.Close()
				return err
			}
			srv := &http.Server{Handler: con, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
				fmt.Fprintf(e.stderr, "Warning: serving the console over plain HTTP on %s: anyone on the network path can read its session; prefer loopback and an SSH tunnel.\n", ip)
			}
			fmt.Fprintf(e.stdout, "AgentKeys console for %s: open this one-time login URL (Ctrl-C stops the console):\n%s\n", s.Server, con.LoginURL())
			if !noOpen {
				if stop := e.openBrowser(d, con.LoginURL()); stop != nil {
					defer stop()
				}
			}
			select {
			case <-cmd.Context().Done():
			case err := <-done:
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(ctx)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "127.0.0.1:0", "the address to serve on: one IP and port (port 0: any free port)")
	cmd.Flags().BoolVar(&noOpen, "no-open", false, "print the login URL only; do not open a browser")
	return cmd
}

// openBrowser opens the login URL in the desktop's browser, when there is one.
// The URL carries the login token, so it is not passed on a command line
// (where other local users could read it): the browser opens a file, readable
// by the owner only, that forwards to the URL. done removes the file.
func (e *env) openBrowser(d home.Dir, loginURL string) (done func()) {
	opener := "xdg-open"
	if runtime.GOOS == "darwin" {
		opener = "open"
	} else if e.getenv("DISPLAY") == "" && e.getenv("WAYLAND_DISPLAY") == "" {
		return nil
	}
	path, err := exec.LookPath(opener)
	if err != nil {
		return nil
	}
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return nil
	}
	f, err := os.CreateTemp(string(d), "console-login-*.html")
	if err != nil {
		return nil
	}
	name := f.Name()
	done = func() { os.Remove(name) }
	_, err = fmt.Fprintf(f, "<!doctype html><meta http-equiv=\"refresh\" content=\"0;url=%s\"><a href=\"%s\">Open the AgentKeys console</a>\n", loginURL, loginURL)
	if cerr := f.Close(); err != nil || cerr != nil {
		done()
		return nil
	}
	open := exec.Command(path, "file://"+filepath.ToSlash(name))
	if err := open.Start(); err != nil {
		done()
		return nil
	}
	go open.Wait()
	fmt.Fprintln(e.stderr, "Opened the console in your browser.")
	return done
}
