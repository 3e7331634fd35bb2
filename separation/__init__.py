"""filmrestore.separation"""
