package healthcheck

import (
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func frame(msg ...byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...)
}

func TestDecodeHealthResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		body []byte
		want servingStatus
		err  string
	}{
		{"empty message is UNKNOWN", frame(), statusUnknown, ""},
		{"SERVING", frame(0x08, 0x01), statusServing, ""},
		{"NOT_SERVING", frame(0x08, 0x02), statusNotServing, ""},
		{"unknown fields skipped", frame(0x10, 0x05, 0x1a, 0x02, 'h', 'i', 0x21, 1, 2, 3, 4, 5, 6, 7, 8, 0x2d, 1, 2, 3, 4, 0x08, 0x01), statusServing, ""},
		{"last status wins", frame(0x08, 0x02, 0x08, 0x01), statusServing, ""},
		{"multi-byte varint", frame(0x08, 0x81, 0x00), statusServing, ""},
		{"short", []byte{0, 0, 0}, 0, "at least 5"},
		{"compressed", append([]byte{1}, frame(0x08, 0x01)[1:]...), 0, "compressed flag 1"},
		{"length too long", []byte{0, 0, 0, 0, 9, 0x08, 0x01}, 0, "length prefix 9, but 2 bytes follow"},
		{"two messages", append(frame(0x08, 0x01), frame(0x08, 0x01)...), 0, "length prefix"},
		{"truncated varint", frame(0x08, 0x80), 0, "bad varint"},
		{"truncated bytes", frame(0x1a, 0x05, 'h'), 0, "bad length"},
		{"huge length", frame(0x1a, 0xff, 0xff, 0xff, 0xff, 0x0f), 0, "bad length"},
		{"field zero", frame(0x00, 0x01), 0, "bad field key"},
		{"group wire type", frame(0x0b), 0, "unsupported wire type 3"},
		{"truncated fixed64", frame(0x09, 1, 2), 0, "truncated fixed64"},
		{"truncated fixed32", frame(0x0d, 1), 0, "truncated fixed32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeHealthResponse(tc.body)
			if tc.err != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, errGRPCFrame)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEncodeHealthRequest(t *testing.T) {
	assert.Equal(t, []byte{0, 0, 0, 0, 0}, encodeHealthRequest(""))
	assert.Equal(t, []byte{0, 0, 0, 0, 6, 0x0a, 4, 'c', 'a', 'r', 't'}, encodeHealthRequest("cart"))
	long := string(make([]byte, 200))
	got := encodeHealthRequest(long)
	assert.Equal(t, []byte{0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01}, got[:8], "a two-byte length varint")
}

// FuzzDecodeHealthResponse feeds arbitrary response bodies — what a misbehaving or hostile
// backend may send — to the decoder: it must never panic, and what it accepts must be one
// well-framed message.
func FuzzDecodeHealthResponse(f *testing.F) {
	for _, seed := range [][]byte{
		frame(), frame(0x08, 0x01), frame(0x08, 0x02), frame(0x1a, 0x02, 'h', 'i', 0x08, 0x01),
		frame(0x09, 1, 2, 3, 4, 5, 6, 7, 8), frame(0x0d, 1, 2, 3, 4), frame(0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01),
		{0, 0, 0, 0, 9, 0x08}, {1, 0, 0, 0, 0}, {},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		status, err := decodeHealthResponse(body)
		if err != nil {
			return
		}
		if len(body) < 5 || body[0] != 0 || int(binary.BigEndian.Uint32(body[1:5])) != len(body)-5 {
			t.Fatalf("accepted a badly framed body %x (status %v)", body, status)
		}
		_ = status.String()
	})
}
