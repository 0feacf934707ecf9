package registry

import (
	"fmt"
	"time"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// KindSessionKeyRotate is governance's request to rotate the session-token key
// (§10.4): the next issuer/jwt/vN signs new sessions from this entry on; the
// previous key keeps verifying the tokens it signed for WindowSeconds (at least
// the longest session lifetime, which the broker checks) and is then retired.
const KindSessionKeyRotate = "session.key.rotate"

const sessionKeysKey = "registry/sessionkeys"

// SessionKeyRotate is the payload of session.key.rotate.
type SessionKeyRotate struct {
	WindowSeconds int64 `json:"window_seconds"`
}

// SessionKey is one version of the session-token key.
type SessionKey struct {
	Version    int    `json:"version"`
	Path       string `json:"path"`                // issuer/jwt/vN
	ActiveFrom int64  `json:"active_from"`         // unix seconds; 0 for v1 (genesis)
	RetireAt   int64  `json:"retire_at,omitempty"` // unix seconds; 0 while it signs new sessions
}

// Accepted reports whether tokens signed by k still verify at unix time now.
func (k SessionKey) Accepted(now int64) bool { return k.RetireAt == 0 || now < k.RetireAt }

// SessionKeys lists the session-token key versions, oldest first; the last signs
// new sessions. A ledger that never rotated has v1 only.
func SessionKeys(st ledger.State) ([]SessionKey, error) {
	var ks []SessionKey
	if ok, err := ledger.GetJSON(st, sessionKeysKey, &ks); err != nil || ok {
		return ks, err
	}
	return []SessionKey{{Version: 1, Path: "issuer/jwt/v1"}}, nil
}

func foldSessionKeyRotate(st ledger.State, e *ledger.Entry) error {
	var r SessionKeyRotate
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	if r.WindowSeconds < 1 || r.WindowSeconds > int64(10*365*24*time.Hour/time.Second) {
		return fmt.Errorf("window_seconds %d is out of range", r.WindowSeconds)
	}
	ks, err := SessionKeys(st)
	if err != nil {
		return err
	}
	now := e.Time / int64(time.Second)
	cur := &ks[len(ks)-1]
	cur.RetireAt = now + r.WindowSeconds
	next := cur.Version + 1
	ks = append(ks, SessionKey{Version: next, Path: fmt.Sprintf("issuer/jwt/v%d", next), ActiveFrom: now})
	return ledger.PutJSON(st, sessionKeysKey, ks)
}
