"""filmrestore.flows"""
