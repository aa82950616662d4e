"""JIRA Cloud as a destination: a ticket per data-quality incident (REST API v3, description
in Atlassian Document Format), updates as comments, resolution as a transition to done; and,
back the other way, JIRA's webhook for a ticket moved to done or reopened resolves or
reopens the Lily issue."""

from adapters.jira.config import JiraSettings
from adapters.jira.inbound import JiraInbound
from adapters.jira.sink import JiraSink
from adapters.spec import AdapterType

ADAPTER = AdapterType(
    name="jira",
    role="integration_jira",
    settings=JiraSettings,
    webhook="jira",
    inbound=JiraInbound(),
    sink=JiraSink(),
)
