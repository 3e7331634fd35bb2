"""filmrestore.tasks"""
