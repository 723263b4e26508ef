/* vla-edge serial protocol v1, controller side. See vla_proto.h and firmware_bridge/PROTOCOL.md. */
#include "vla_proto.h"

#include <string.h>

uint16_t vla_crc16(const uint8_t *data, size_t len) {
    uint16_t crc = 0xFFFFu; /* CRC-16/CCITT-FALSE */
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint16_t)data[i] << 8);
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000u) ? (uint16_t)((crc << 1) ^ 0x1021u) : (uint16_t)(crc << 1);
        }
    }
    return crc;
}

size_t vla_cobs_encode(const uint8_t *in, size_t len, uint8_t *out) {
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < len; i++) {
        if (in[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = in[i];
            if (++code == 0xFF) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

size_t vla_cobs_decode(const uint8_t *in, size_t len, uint8_t *out, size_t out_cap) {
    size_t i = 0, o = 0;
    while (i < len) {
        uint8_t code = in[i++];
        if (code == 0) return 0;
        for (uint8_t k = 1; k < code; k++) {
            if (i >= len || in[i] == 0 || o >= out_cap) return 0;
            out[o++] = in[i++];
        }
        if (code != 0xFF && i < len) {
            if (o >= out_cap) return 0;
            out[o++] = 0;
        }
    }
    return o;
}

int vla_parse(const uint8_t *encoded, size_t len, vla_frame *frame) {
    uint8_t raw[VLA_MAX_FRAME + 2];
    if (len == 0 || len > VLA_MAX_WIRE) return -1;
    size_t n = vla_cobs_decode(encoded, len, raw, sizeof raw);
    if (n < VLA_HEADER_SIZE + 2u) return -1;
    uint16_t received = (uint16_t)(raw[n - 2] | (raw[n - 1] << 8));
    if (vla_crc16(raw, n - 2) != received) return -1;
    if (raw[4] != n - 2 - VLA_HEADER_SIZE || raw[4] > VLA_MAX_PAYLOAD) return -1;
    frame->version = raw[0];
    frame->type = raw[1];
    frame->seq = (uint16_t)(raw[2] | (raw[3] << 8));
    frame->length = raw[4];
    memcpy(frame->payload, raw + VLA_HEADER_SIZE, frame->length);
    return 0;
}

static int payload_ok(uint8_t type, uint8_t length, const uint8_t *payload) {
    switch (type) {
    case VLA_HELLO: return length == 2;
    case VLA_HELLO_ACK: return length == 6;
    case VLA_ACTION: return length == 9 && (payload[8] & ~0x01u) == 0;
    case VLA_ACK: return length == 18 || length == 27;
    case VLA_HEARTBEAT: case VLA_ESTOP_CLEAR: return length == 0;
    case VLA_ESTOP: return length == 1;
    case VLA_ERROR: return length == 3;
    default: return -1;
    }
}

int vla_validate(const vla_frame *frame) {
    if (frame->version != VLA_PROTOCOL_VERSION) return VLA_ERR_VERSION;
    int ok = payload_ok(frame->type, frame->length, frame->payload);
    if (ok < 0) return VLA_ERR_TYPE;
    return ok ? 0 : VLA_ERR_PAYLOAD;
}

size_t vla_build(uint8_t type, uint16_t seq, const uint8_t *payload, uint8_t length, uint8_t *wire) {
    uint8_t raw[VLA_MAX_FRAME];
    raw[0] = VLA_PROTOCOL_VERSION;
    raw[1] = type;
    raw[2] = (uint8_t)(seq & 0xFF);
    raw[3] = (uint8_t)(seq >> 8);
    raw[4] = length;
    if (length) memcpy(raw + VLA_HEADER_SIZE, payload, length);
    uint16_t crc = vla_crc16(raw, VLA_HEADER_SIZE + length);
    raw[VLA_HEADER_SIZE + length] = (uint8_t)(crc & 0xFF);
    raw[VLA_HEADER_SIZE + length + 1] = (uint8_t)(crc >> 8);
    size_t n = vla_cobs_encode(raw, VLA_HEADER_SIZE + length + 2u, wire);
    wire[n] = 0;
    return n + 1;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v & 0xFF); p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)(v & 0xFFFF)); put16(p + 2, (uint16_t)(v >> 16)); }
static int16_t get16(const uint8_t *p) { return (int16_t)(uint16_t)(p[0] | (p[1] << 8)); }

static void send(uint8_t type, uint16_t seq, const uint8_t *payload, uint8_t length) {
    uint8_t wire[VLA_MAX_WIRE];
    vla_hal_write(wire, vla_build(type, seq, payload, length, wire));
}

static void send_error(uint8_t code, uint16_t seq) {
    uint8_t p[3] = {code, (uint8_t)(seq & 0xFF), (uint8_t)(seq >> 8)};
    send(VLA_ERROR, seq, p, 3);
}

static uint8_t state_flags(const vla_controller *ctl) {
    return (uint8_t)((ctl->watchdog_hold ? VLA_STATE_WATCHDOG_HOLD : 0u) | (ctl->estop ? VLA_STATE_ESTOP : 0u));
}

static void send_ack(const vla_controller *ctl, uint16_t seq, uint8_t status, const vla_action *applied) {
    uint8_t p[27];
    int32_t hand[3];
    int16_t gripper;
    vla_hal_state(hand, &gripper);
    put16(p, seq);
    p[2] = status;
    p[3] = state_flags(ctl);
    put32(p + 4, (uint32_t)hand[0]);
    put32(p + 8, (uint32_t)hand[1]);
    put32(p + 12, (uint32_t)hand[2]);
    put16(p + 16, (uint16_t)gripper);
    if (applied) { /* the action as applied, in the ACTION layout */
        put16(p + 18, (uint16_t)applied->dx);
        put16(p + 20, (uint16_t)applied->dy);
        put16(p + 22, (uint16_t)applied->dz);
        put16(p + 24, (uint16_t)applied->gripper);
        p[26] = applied->flags;
        send(VLA_ACK, seq, p, 27);
    } else {
        send(VLA_ACK, seq, p, 18);
    }
}

static int16_t clamp16(int16_t v, int16_t limit) { return v > limit ? limit : (v < -limit ? (int16_t)-limit : v); }

static int seq_newer(uint16_t seq, uint16_t than) {
    return seq != than && (uint16_t)(seq - than) < 0x8000u;
}

void vla_init(vla_controller *ctl, const vla_limits *limits) {
    memset(ctl, 0, sizeof *ctl);
    ctl->limits = *limits;
    ctl->last_fed_ms = vla_hal_now_ms();
}

void vla_tick(vla_controller *ctl) {
    if (ctl->connected && !ctl->watchdog_hold &&
        (uint32_t)(vla_hal_now_ms() - ctl->last_fed_ms) > ctl->limits.watchdog_ms) {
        ctl->watchdog_hold = 1;
        vla_hal_hold();
    }
}

static void feed(vla_controller *ctl) {
    ctl->last_fed_ms = vla_hal_now_ms();
    ctl->watchdog_hold = 0;
}

void vla_handle(vla_controller *ctl, const vla_frame *frame) {
    int err = vla_validate(frame);
    if (err) { send_error((uint8_t)err, frame->seq); return; }
    if (frame->type == VLA_HELLO) {
        if (!(frame->payload[0] <= VLA_PROTOCOL_VERSION && VLA_PROTOCOL_VERSION <= frame->payload[1])) {
            send_error(VLA_ERR_VERSION, frame->seq);
            return;
        }
        ctl->connected = 1;
        ctl->have_last = 0;
        feed(ctl);
        uint8_t p[6] = {VLA_PROTOCOL_VERSION, ctl->limits.action_dims};
        put16(p + 2, ctl->limits.control_period_ms);
        put16(p + 4, ctl->limits.watchdog_ms);
        send(VLA_HELLO_ACK, frame->seq, p, 6);
        return;
    }
    if (!ctl->connected) { send_error(VLA_ERR_NOT_CONNECTED, frame->seq); return; }
    if (ctl->have_last && frame->seq == ctl->last_seq) {
        ctl->duplicates++;
        send_ack(ctl, frame->seq, VLA_DUPLICATE, ctl->last_had_action ? &ctl->last_applied : NULL);
        return;
    }
    if (ctl->have_last && !seq_newer(frame->seq, ctl->last_seq)) { send_error(VLA_ERR_STALE, frame->seq); return; }
    ctl->have_last = 1;
    ctl->last_seq = frame->seq;
    ctl->last_had_action = 0;
    switch (frame->type) {
    case VLA_ACTION: {
        if (ctl->estop) { vla_hal_hold(); send_ack(ctl, frame->seq, VLA_ESTOPPED, NULL); return; }
        feed(ctl);
        vla_action asked = {get16(frame->payload), get16(frame->payload + 2), get16(frame->payload + 4),
                            get16(frame->payload + 6), frame->payload[8]};
        int16_t m = ctl->limits.max_step;
        vla_action applied = {clamp16(asked.dx, m), clamp16(asked.dy, m), clamp16(asked.dz, m),
                              clamp16(asked.gripper, 10000), asked.flags};
        uint8_t status = memcmp(&applied, &asked, sizeof applied) == 0 ? VLA_APPLIED : VLA_CLAMPED;
        vla_hal_apply(&applied);
        ctl->applied++;
        ctl->last_applied = applied;
        ctl->last_had_action = 1;
        send_ack(ctl, frame->seq, status, &applied);
        return;
    }
    case VLA_HEARTBEAT: feed(ctl); break;
    case VLA_ESTOP: ctl->estop = 1; vla_hal_hold(); break;
    case VLA_ESTOP_CLEAR: ctl->estop = 0; break;
    default: send_error(VLA_ERR_TYPE, frame->seq); return; /* controller-to-host types */
    }
    send_ack(ctl, frame->seq, VLA_HELD, NULL);
}

void vla_rx_byte(vla_controller *ctl, uint8_t byte) {
    if (byte != 0) {
        if (ctl->rx_discarding) return;
        if (ctl->rx_len >= sizeof ctl->rx) { ctl->rx_discarding = 1; ctl->rx_len = 0; ctl->rejected++; return; }
        ctl->rx[ctl->rx_len++] = byte;
        return;
    }
    size_t len = ctl->rx_len;
    ctl->rx_len = 0;
    if (ctl->rx_discarding) { ctl->rx_discarding = 0; return; }
    if (len == 0) return;
    vla_frame frame;
    if (vla_parse(ctl->rx, len, &frame) != 0) { ctl->rejected++; return; }
    vla_handle(ctl, &frame);
}
