package history

import (
	"math/rand/v2"
	"testing"
	"time"

	"palaver.dev/services/internal/message"
)

// BenchmarkDecodeEnvelope: the ingest path's decoder against
// message.Decode, on the envelopes of BenchmarkHistory.
func BenchmarkDecodeEnvelope(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	v, err := message.Encode(&message.Envelope{V: 1, ID: "b-1-123456", Room: "b12345678-42", SenderID: "u-7",
		SenderName: "User u-7", Text: benchText(r), ClientTime: time.Now()})
	if err != nil {
		b.Fatal(err)
	}
	for name, decode := range map[string]func([]byte) (message.Envelope, error){
		"ingest": decodeEnvelope, "message.Decode": message.Decode,
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := decode(v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
