"""Realistic readings for six Chicago beaches, learnt from the real 2013-2018 data; and its replay.

**Simulate.** Beaches take turns, one reading per simulated hour each; ``speed`` simulated seconds
pass per real second. Each reading is stamped with the wall-clock time it is served (UTC), so
validation and end-to-end latency are real; the simulated hour only drives the values (season and
time of day). Each metric of each beach (water temperature, turbidity, battery) is a Gaussian-copula
model fitted at start-up from the packaged real data (:mod:`sensor_pipeline.data`):

* a latent series ``x_t = s(t) + a_t``, where ``s`` is the real data's mean normal score by hour of
  day and by ten-day period of the month, and ``a_t`` an AR(1) of what remains: its coefficient
  matches the real residuals' autocorrelation a day apart (0.96-0.99 per hour) and its steps are
  drawn from their real hour-to-hour steps (mostly small, now and then a storm or an upwelling);
* each simulated month ranks its latent values and maps rank ``r`` of ``n`` through the real
  empirical quantile function of that beach, metric and month, at a uniform point of
  ``[r/n, (r+1)/n)`` (stratified sampling).

So every simulated month has the real month's distribution of values by construction, with its
atoms (battery in 0.1 V steps, Montrose Beach's zero turbidity) and tails (storms of 1,000+ NTU), and
nothing is clipped. Stratifying matters: with that much autocorrelation a season of free AR(1) draws
holds only a few dozen independent values per beach, and sampling noise alone would put it 0.1 or
more (Kolmogorov-Smirnov) from the real data. Months with fewer than :data:`MIN_MONTH_READINGS` real
readings share the nearest fuller month's values, and months without any (winter) borrow them.

**Gaps.** With ``gaps=True`` a beach also misses hours as the real buoys do: after each reading a
silence starts with the beach's real probability and lasts a length drawn from its real silences
(see :func:`gap_counts`). Off by default: the API serves every beach every hour.

**Replay.** Serves the real readings in time order with their original timestamps and
deterministic ids, so replaying twice stores nothing twice.

**Faults.** With probability ``fault_rate`` a reading is replaced by a malformed line, an
out-of-range or non-numeric value, a bad or future timestamp, or a duplicate of a recent line. The
real data's own rate is :func:`real_fault_rate` (0.003 %: one reading of 36,405).

**Fidelity.** :func:`fidelity_report` (``sensor-pipeline simulate --report``) simulates a season and
prints its per-beach Kolmogorov-Smirnov distances to the real data with the fault and gap rates, the
correlation of each reading with the next hour's (real and simulated) and the mean daily profiles.
"""

from sensor_pipeline.contract.schema import BEACHES
from sensor_pipeline.source.simulator.engine import Simulator
from sensor_pipeline.source.simulator.ids import SnowflakeIds
from sensor_pipeline.source.simulator.model import (
    MIN_MONTH_READINGS,
    BeachModel,
    GapModel,
    MetricModel,
    describe_models,
    fitted_models,
)
from sensor_pipeline.source.simulator.real import (
    HOUR,
    MAX_GAP_HOURS,
    METRICS,
    RealReading,
    format_line,
    gap_counts,
    real_fault_rate,
    real_gap_rates,
    real_readings,
    replay_id,
    valid_real_readings,
)

__all__ = [
    "BEACHES",
    "HOUR",
    "KS_LIMIT",
    "LAG1_LIMIT",
    "MAX_GAP_HOURS",
    "METRICS",
    "MIN_MONTH_READINGS",
    "BeachModel",
    "Fidelity",
    "GapModel",
    "MetricModel",
    "RealReading",
    "Simulator",
    "SnowflakeIds",
    "describe_models",
    "fidelity_report",
    "fitted_models",
    "format_line",
    "gap_counts",
    "ks_distance",
    "real_fault_rate",
    "real_gap_rates",
    "real_readings",
    "replay_id",
    "valid_real_readings",
]
from sensor_pipeline.source.simulator.fidelity import KS_LIMIT, LAG1_LIMIT, Fidelity, fidelity_report, ks_distance
