"""
Tests for clientid-twisted (trial TestCases, also collected by pytest).
"""
