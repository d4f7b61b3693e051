"""
echotwist's tests: run them with C{trial tests} or C{pytest}.
"""
