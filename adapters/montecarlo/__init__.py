"""Monte Carlo: data-quality incidents, from its signed webhooks and by polling its API, as
issues on the assets they concern."""

from adapters.montecarlo.config import MonteCarloSettings
from adapters.montecarlo.inbound import MonteCarloInbound
from adapters.montecarlo.poll import MonteCarloPoller
from adapters.spec import AdapterType

ADAPTER = AdapterType(
    name="monte_carlo",
    role="integration_monte_carlo",
    settings=MonteCarloSettings,
    webhook="monte-carlo",
    inbound=MonteCarloInbound(),
    poller=MonteCarloPoller(),
)
