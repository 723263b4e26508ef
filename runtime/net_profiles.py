"""Named network conditions for the netem proxy (runtime/netem_proxy.py), and where their figures come
from. The kernel on the project's machines has no netem, so these are applied by a user-space proxy.

| profile | round trip (RTT) | jitter / tail | robot -> server | server -> robot | TCP loss | source |
| --- | --- | --- | --- | --- | --- | --- |
| `loopback` | 0 | 0 | unlimited | unlimited | 0 | no shaping: the proxy alone |
| `lan` | 0.3 ms | 0.05 ms | 1000 Mbit/s | 1000 Mbit/s | 0 | [1] wired part of a campus network: 99th percentile under 1 ms; 1000BASE-T line rate |
| `wifi` | median 3 ms, p90 20 ms, p99 250 ms | the published distribution | 100 Mbit/s * | 100 Mbit/s * | 0 ** | [1] Wi-Fi hop latency over 47,000 devices |
| `lte` | 70 ms | 6 ms | 6 Mbit/s | 13 Mbit/s | 0.1% * | [2] medians of commercial LTE (4GTest) |
| `cloud` | 80 ms | 2 ms * | 100 Mbit/s * | 100 Mbit/s * | 0.01% * | [3] AWS us-east-1 <-> eu-west-1 average 80.5 ms |

\\* assumed, no published figure behind it: change it with the proxy's flags (`--up-mbit`, `--loss`, ...).
\\** 802.11 retransmits lost frames at the link layer; what reaches TCP is delay, which the tail models.

Sources:
1. K. Sui, M. Zhou, D. Liu, M. Ma, D. Pei, Y. Zhao, Z. Li, T. Moscibroda, "Characterizing and Improving
   WiFi Latency in Large-Scale Operational Networks", MobiSys 2016: Wi-Fi hop latency "as low as 3 ms",
   90th and 99th percentiles about 20 ms and 250 ms; the wired part of the same network under 1 ms at
   the 99th percentile.
2. J. Huang, F. Qian, A. Gerber, Z. M. Mao, S. Sen, O. Spatscheck, "A Close Examination of Performance
   and Power Characteristics of 4G LTE Networks", MobiSys 2012: median downlink 13 Mbit/s and uplink
   6 Mbit/s (from the abstract). The round trip of about 70 ms with a few ms of jitter is from their
   latency measurements as remembered when this table was written, not re-read: check it against the
   paper before quoting `lte` results.
3. "Latency Between AWS Global Regions", average ping between regions as tabulated in
   https://acomputerscientistlearnsaws.blogspot.com/2017/04/aws-regions.html : N. Virginia <-> Ireland
   80.5 ms, N. Virginia <-> Tokyo 145 ms. `cloud` is a robot on a wired site in Europe served from a
   GPU region across the Atlantic.

How a profile is applied (per direction, per chunk of bytes the proxy reads; see netem_proxy.py):
- delay: half the RTT each way, plus a normal variation of standard deviation `jitter_ms`, clipped at 0.
  A profile with `rtt_quantiles_ms` draws the whole round trip from that published distribution
  (log-linear between the given percentiles): the server -> robot direction gets half the minimum, the
  robot -> server direction the rest, so the round trip follows the distribution exactly (two independent
  halves would narrow it). Bytes keep their order, as TCP delivers them: a delayed chunk delays the ones
  behind it.
- bandwidth: each direction is a link of `up_mbit` / `down_mbit` that sends one chunk after another.
- loss: TCP loses no data; a lost segment costs time. Each 1448-byte segment is lost with probability
  `loss`, and a chunk with a lost segment arrives `rto_ms` later (default 200 ms, Linux's minimum
  retransmission timeout, TCP_RTO_MIN). A robot's request or reply is a few segments, too few for fast
  retransmit (three duplicate ACKs), so the timeout is what applies; tail-loss probes (RACK-TLP,
  RFC 8985) can recover in about two round trips: model that with `--rto-ms`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from runtime.errors import UserError

MSS = 1448  # bytes of payload in one TCP segment on Ethernet with timestamps


@dataclass(frozen=True)
class NetProfile:
    name: str
    rtt_ms: float = 0.0  # round trip added by the path (median)
    jitter_ms: float = 0.0  # standard deviation of each direction's delay variation
    rtt_quantiles_ms: tuple[tuple[float, float], ...] = ()  # (quantile, RTT ms) from 0 to 1; overrides rtt/jitter
    up_mbit: float = 0.0  # robot -> server rate in Mbit/s; 0 = unlimited
    down_mbit: float = 0.0  # server -> robot
    loss: float = 0.0  # probability that one TCP segment is lost (each direction)
    rto_ms: float = 200.0  # what a lost segment costs
    note: str = ""

    def check(self) -> "NetProfile":
        if min(self.rtt_ms, self.jitter_ms, self.up_mbit, self.down_mbit, self.rto_ms) < 0:
            raise UserError(f"network profile '{self.name}': delays, jitter, rates and rto must be >= 0")
        if not 0 <= self.loss < 1:
            raise UserError(f"network profile '{self.name}': loss is a probability per segment, 0 <= loss < 1 "
                            f"(0.001 is 0.1%)")
        q = self.rtt_quantiles_ms
        if q:
            qs, values = [p for p, _ in q], [v for _, v in q]
            if qs[0] != 0 or qs[-1] != 1 or qs != sorted(qs) or values != sorted(values) or values[0] <= 0:
                raise UserError(f"network profile '{self.name}': rtt_quantiles_ms must run from quantile 0 to 1 "
                                f"with positive, non-decreasing RTTs")
        return self

    def replace(self, **overrides) -> "NetProfile":
        """This profile with the given knobs changed (None leaves a knob as it is)."""
        changes = {k: v for k, v in overrides.items() if v is not None}
        if "rtt_ms" in changes or "jitter_ms" in changes:
            changes.setdefault("rtt_quantiles_ms", ())  # explicit delay knobs replace a distribution
        return dataclasses.replace(self, **changes).check() if changes else self

    def describe(self) -> str:
        if self.rtt_quantiles_ms:
            delay = "RTT " + ", ".join(f"p{round(100 * p)} {v:g} ms" for p, v in self.rtt_quantiles_ms)
        else:
            delay = f"RTT {self.rtt_ms:g} ms, jitter {self.jitter_ms:g} ms"
        def rate(r):
            return f"{r:g} Mbit/s" if r else "unlimited"
        return (f"{self.name}: {delay}; up {rate(self.up_mbit)}, down {rate(self.down_mbit)}; "
                f"loss {100 * self.loss:g}% (rto {self.rto_ms:g} ms)")


PROFILES: dict[str, NetProfile] = {
    p.name: p.check() for p in (
        NetProfile("loopback", note="no shaping"),
        NetProfile("lan", rtt_ms=0.3, jitter_ms=0.05, up_mbit=1000, down_mbit=1000,
                   note="wired LAN [Sui et al. 2016; 1000BASE-T]"),
        NetProfile("wifi", rtt_quantiles_ms=((0.0, 1.5), (0.5, 3.0), (0.9, 20.0), (0.99, 250.0), (1.0, 500.0)),
                   up_mbit=100, down_mbit=100, note="Wi-Fi hop [Sui et al. 2016]; rates assumed; min/max assumed"),
        NetProfile("lte", rtt_ms=70, jitter_ms=6, up_mbit=6, down_mbit=13, loss=0.001,
                   note="LTE [Huang et al. 2012]; loss assumed"),
        NetProfile("cloud", rtt_ms=80, jitter_ms=2, up_mbit=100, down_mbit=100, loss=0.0001,
                   note="distant cloud region, N. Virginia <-> Ireland [AWS inter-region table]; rest assumed"),
    )
}


def get_profile(name: str) -> NetProfile:
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        raise UserError(f"unknown network profile '{name}': choose from {', '.join(PROFILES)} "
                        f"(`python -m runtime netem-proxy --list`)") from None


def get_profiles(names: str) -> list[NetProfile]:
    """'lan,wifi,lte' -> profiles; 'all' -> every named profile except loopback."""
    if names.strip().lower() == "all":
        return [p for name, p in PROFILES.items() if name != "loopback"]
    return [get_profile(n) for n in names.split(",") if n.strip()]
