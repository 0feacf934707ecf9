package mailedge

import (
	"bytes"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkInbound measures inbound messages of 10 KiB accepted per second
// into the local store (each one synced to disk before its 250), over 16
// SMTP connections at once, each sending message after message.
func BenchmarkInbound(b *testing.B) {
	v := newEnv(b, func(c *Config) {
		c.IPRate, c.RecipientRate = Rate{1 << 30, time.Minute}, Rate{1 << 30, time.Minute}
	})
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n" // 66 bytes
	body := strings.Repeat(line, 10240/len(line))
	var n atomic.Int64
	b.SetParallelism(8) // × GOMAXPROCS connections
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		c := dial(b, v.mx)
		for pb.Next() {
			i := n.Add(1)
			msg := message("s@example.net", addrA, fmt.Sprint("bench-", i), body)
			if len(msg) < 10<<10 {
				msg = append(msg, bytes.Repeat([]byte("x"), 10<<10-len(msg))...)
			}
			if code, err := send(c, "s@example.net", []string{addrA}, msg); code != 250 {
				b.Errorf("message %d: %d %v", i, code, err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "msg/s")
}
