package daemon

import (
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/client"
)

// brokerHTTP is the daemon's one HTTP client for brokers. It keeps up to 64
// idle connections per broker, so that the requests of concurrent socket and
// MCP calls reuse connections: http.DefaultTransport keeps 2, so at 16
// concurrent reads most of them opened a new connection (against an https
// broker, a TCP and TLS handshake) and left one in TIME_WAIT.
var brokerHTTP = &http.Client{Timeout: 30 * time.Second, Transport: brokerTransport()}

func brokerTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 256, 64
	return t
}

// maxMemoSessions bounds the memo (a process serves one daemon directory, a
// bench one per agent); past it the memo starts over.
const maxMemoSessions = 4096

// sessions memoizes each daemon directory's session as read from its file:
// the decoded file and the client of the agent session made from it (its
// broker, token and proof key, with the key's part of every proof encoded).
// Every call stats the session file and uses the memo only while it is the
// same file, unchanged (same inode, size and modification time): pairing
// again replaces the file, so the next call loads the new session, as it did
// when every call read the file. The memo holds what the file holds, never a
// credential.
var sessions = sessionMemo{m: map[Dir]*memoSession{}}

type sessionMemo struct {
	mu sync.Mutex
	m  map[Dir]*memoSession
}

type memoSession struct {
	fi    os.FileInfo
	sess  Session
	agent *client.AgentSession
}

// load returns d's session (a copy the caller may keep) and a client of the
// agent session on its broker, dated by time.Now.
func (sm *sessionMemo) load(d Dir) (*Session, *client.AgentSession, error) {
	fi, err := os.Stat(d.SessionPath())
	if err == nil {
		sm.mu.Lock()
		m := sm.m[d]
		sm.mu.Unlock()
		if m != nil && os.SameFile(m.fi, fi) && m.fi.Size() == fi.Size() && m.fi.ModTime().Equal(fi.ModTime()) {
			s := m.sess
			return &s, m.agent, nil
		}
	}
	sess, err := d.LoadSession()
	if err != nil {
		return nil, nil, err
	}
	key, err := DecodeKey(sess.ProofKey)
	if err != nil {
		return nil, nil, damagedSession()
	}
	c, err := client.NewWith(sess.Server, brokerHTTP)
	if err != nil {
		return nil, nil, err
	}
	agent := c.WithAgent(sess.Token, key)
	if fi != nil {
		// fi was taken before the file was read: if it was replaced in
		// between, the next call sees another file and loads it again.
		sm.mu.Lock()
		if len(sm.m) >= maxMemoSessions {
			clear(sm.m)
		}
		sm.m[d] = &memoSession{fi: fi, sess: *sess, agent: agent}
		sm.mu.Unlock()
	}
	return sess, agent, nil
}
