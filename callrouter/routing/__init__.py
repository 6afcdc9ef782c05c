"""Routing core: phone lookup, rules, the pure decision, and the Router tying them together."""
from callrouter.routing.decision import RouteDecision, RoutedCall
from callrouter.routing.engine import decide, default_decision, sanitize_display
from callrouter.routing.lookup import PhoneDirectory, PhoneIndex, StoreLookup
from callrouter.routing.router import Router
from callrouter.routing.rules import Problem, Rules, RulesError, RuleSet, check_rules, load_rules
from callrouter.routing.types import AgentStatus, ClientInfo, LookupResult

__all__ = ["AgentStatus", "ClientInfo", "LookupResult", "PhoneDirectory", "PhoneIndex", "Problem", "RouteDecision",
           "RoutedCall", "Router", "Rules", "RulesError", "RuleSet", "StoreLookup", "check_rules", "decide",
           "default_decision", "load_rules", "sanitize_display"]
