"""Coordinator unit tests: no broker, no sockets, a manual clock. (This file also puts
``coordinator_log`` on the import path of the tests below it.)"""
